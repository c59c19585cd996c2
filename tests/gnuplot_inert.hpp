// Whether a gnuplot script that fbt plot writes (cli/plot.hpp, gnuplot_script) can do
// anything but draw: the check behind the hostile-payload test (tests/test_research.cpp) and the
// plot fuzz target (fuzz/fuzz_plot.cpp). Strings from the plotted files may appear only as
// single-quoted literals (gnuplot expands nothing in them) without control characters, joined by
// the constant "'" where they held a quote; with the literals taken out, every line must be one of
// fbt's own commands, and the file names the script reads and writes fbt's fixed ones.
#pragma once
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace fbt::testing {

inline bool gnuplot_script_is_inert(const std::string& script, std::string& why) {
  // Each line's shape: its literals replaced by O (an output name), D (a data file name) or S
  // (any other string), the quote constant "'" by Q. A title may be any literal.
  const std::string style = R"((linespoints pt 7 ps 0\.4|lines lw 2|boxes))";
  const std::vector<std::regex> allowed = {
      std::regex(R"(set terminal pngcairo size 900,560 noenhanced)"), std::regex(R"(set grid)"),
      std::regex(R"(set key outside right)"), std::regex(R"(set output O)"),
      std::regex(R"(set (title|xlabel|ylabel) [SDO])"), std::regex(R"(set logscale y)"), std::regex(R"(unset logscale)"),
      std::regex(R"(set yrange \[(0|\*):(1|\*)\])"), std::regex(R"(set xtics \([SDO] \d+(, [SDO] \d+)*\))"),
      std::regex(R"(set xtics autofreq)"), std::regex(R"(set style fill solid 0\.6)"), std::regex(R"(set boxwidth 0\.6)"),
      std::regex("plot D index \\d+ with " + style + " title [SDO](, D index \\d+ with " + style + " title [SDO])*")};
  const std::regex output_name(R"(\.\./[a-z_]+\.png)"), data_name(R"([a-z_]+\.dat)");
  std::istringstream in(script);
  std::string line;
  for (int lineno = 1; std::getline(in, line); ++lineno) {
    std::string shape;
    for (size_t i = 0; i < line.size(); ++i) {
      const char ch = line[i];
      if (ch == '\'') {
        const size_t end = line.find('\'', i + 1);
        if (end == std::string::npos) {
          why = "line " + std::to_string(lineno) + ": a literal left open (its string went on to the next line)";
          return false;
        }
        const std::string text = line.substr(i + 1, end - i - 1);
        for (char c : text)
          if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
            why = "line " + std::to_string(lineno) + ": a control character in a literal";
            return false;
          }
        // Where a name is read or written, only fbt's fixed names (the next check says which).
        shape += std::regex_match(text, output_name) ? "O" : std::regex_match(text, data_name) ? "D" : "S";
        i = end;
      } else if (line.compare(i, 3, "\"'\"") == 0) {
        shape += "Q";
        i += 2;
      } else {
        shape += ch;
      }
    }
    // A string with a quote is literals joined on the quote constant: one string expression.
    shape = std::regex_replace(shape, std::regex(R"([SDO](\.Q\.[SDO])+)"), "S");
    if (shape.empty()) continue;
    bool ok = false;
    for (const std::regex& r : allowed) ok = ok || std::regex_match(shape, r);
    if (!ok) {
      why = "line " + std::to_string(lineno) + ": not one of fbt's commands: " + shape.substr(0, 200);
      return false;
    }
  }
  return true;
}

}  // namespace fbt::testing
