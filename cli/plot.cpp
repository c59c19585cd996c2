#include "cli/plot.hpp"

#include <fmt/core.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "util/check.hpp"
#include "util/files.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

extern char** environ;

namespace fbt {

namespace {

// No path the user gave reaches the gnuplot script: gnuplot runs in the charts' scratch folder
// (out_dir/.fbt-plot), where the script names its data files and the PNGs (in ..) by fixed names.
// Every string from the inputs (series titles from policies, sources and run folders) reaches it
// through quoted(): single-quoted gnuplot strings, where nothing is expanded (no backquotes,
// macros or function calls; double quotes would expand backquotes), a quote inside joined on as
// the constant "'" ('it'."'".'s': gnuplot 5.4 misreads doubled quotes in some places), and
// control characters, a newline among them (which would end the string and start a command),
// made '?'.
std::string quoted(const std::string& s) {
  std::string q = "'";
  for (char ch : printable(s)) q += ch == '\'' ? std::string("'.\"'\".'") : std::string(1, ch);
  return q + "'";
}

struct Series {
  std::string title;
  std::vector<std::pair<double, double>> points;
};

// The series as name.dat in dir; returns the file's name (the script reads it in dir).
std::string write_data(const fs::path& dir, const std::string& name, const std::vector<Series>& series) {
  const fs::path p = dir / (name + ".dat");
  std::ostringstream out;
  for (const Series& s : series) {  // gnuplot index blocks, two blank lines apart
    out << "# " << printable(s.title) << "\n";
    for (auto [x, y] : s.points) out << x << " " << y << "\n";
    out << "\n\n";
  }
  write_text_atomic(p.string(), out.str());
  return name + ".dat";
}

std::string plot_lines(const std::string& dat, const std::vector<Series>& series, const std::string& style) {
  std::string cmd = "plot ";
  for (size_t i = 0; i < series.size(); ++i)
    cmd += fmt::format("{}{} index {} with {} title {}", i ? ", " : "", quoted(dat), i, style, quoted(series[i].title));
  return cmd + "\n";
}

// The .jsonl files of a run directory (sorted), or the one file given; dir is where they are.
std::vector<fs::path> jsonl_inputs(const std::string& input, fs::path& dir) {
  std::vector<fs::path> files;
  if (fs::is_directory(input)) {
    dir = input;
    for (const auto& e : fs::directory_iterator(input))
      if (e.path().extension() == ".jsonl") files.push_back(e.path());
    std::sort(files.begin(), files.end());
  } else {
    check(fs::exists(input), input, ": no such file or directory");
    files.push_back(input);
    dir = fs::path(input).parent_path();
  }
  check(!files.empty(), input, ": no .jsonl files to plot");
  return files;
}

// Everything the charts draw, gathered from the lines of the inputs.
struct Charts {
  std::map<std::string, Series> curves;                       // loss/bpc by split
  std::map<std::string, Series> lag_by, jac_by;               // by policy (grads files) or by step (probes)
  std::map<int, Series> mix;                                  // layer-mix weight i over steps
  std::map<std::string, std::map<std::string, double>> bias;  // policy -> group -> rel_error
  std::map<std::string, Series> accuracy;                     // labelled data: valid accuracy by run
  std::map<std::string, Series> spans;                        // adaptive span of each head, layer by layer
};

// body() on line `lineno` of f: a JSON error in it (not JSON, a field missing or of the wrong
// type) becomes one naming the file and line.
template <typename Body>
auto on_line(const fs::path& f, int64_t lineno, Body body) {
  try {
    return body();
  } catch (const json::parse_error&) {
    throw std::runtime_error(fmt::format("{}:{}: not a JSON line", f.string(), lineno));
  } catch (const json::exception& e) {
    throw std::runtime_error(fmt::format("{}:{}: {}", f.string(), lineno, e.what()));
  }
}

// Every non-empty line of the inputs, parsed once, with where it came from (for errors).
struct Line {
  fs::path file;
  int64_t lineno;
  json j;
};

std::vector<Line> read_lines(const std::vector<fs::path>& files) {
  std::vector<Line> lines;
  for (const fs::path& f : files) {
    std::ifstream in(f);
    std::string line;
    for (int64_t lineno = 1; std::getline(in, line); ++lineno)
      if (!line.empty()) lines.push_back({f, lineno, on_line(f, lineno, [&] { return json::parse(line); })});
  }
  return lines;
}

// A grads line belongs to the series of its policy, and of its source (checkpoint, batch file,
// JSONL file) when the inputs hold several: one line per policy or per checkpoint.
bool several_sources(const std::vector<Line>& lines) {
  std::set<std::string> sources;
  for (const Line& l : lines)
    if (l.j.contains("kind"))
      sources.insert(l.file.string() + on_line(l.file, l.lineno, [&] { return l.j.value("source", ""); }));
  return sources.size() > 1;
}

void add_probe(Charts& c, const json& j) {
  const std::string key = fmt::format("step {}", j.at("step").get<int64_t>());
  Series& s = c.lag_by[key];
  s.title = key;
  const auto& g = j.at("lag_grad_norm");
  for (size_t k = 0; k < g.size(); ++k) s.points.push_back({double(k + 1), g[k].get<double>()});
  const auto& w = j.at("layer_mix");
  for (size_t i = 0; i < w.size(); ++i) {
    c.mix[int(i)].title = i == 0 ? "embedding" : fmt::format("layer {}", i);
    c.mix[int(i)].points.push_back({j.at("step").get<double>(), w[i].get<double>()});
  }
}

// A train line's spans ([layer][head], in steps): a series per head, keyed so that a layer's heads
// sort together.
void add_spans(Charts& c, const json& j, const std::string& run) {
  const auto& layers = j.at("spans");
  for (size_t l = 0; l < layers.size(); ++l)
    for (size_t h = 0; h < layers[l].size(); ++h) {
      Series& s = c.spans[fmt::format("{}{:06} {:06}", run, l, h)];
      s.title = fmt::format("{}layer {} head {}", run.empty() ? "" : run + " ", l, h);
      s.points.push_back({j.at("step").get<double>(), layers[l][h].get<double>()});
    }
}

void add_line(Charts& c, const json& j, const std::string& series, const std::string& run) {
  const std::string kind = j.value("kind", ""), split = j.value("split", "");
  if (split == "train" || split == "valid") {
    const std::string prefix = run.empty() ? split : run + " " + split;  // a line per run and split
    c.curves[prefix + " loss"].points.push_back({j.at("step").get<double>(), j.at("loss").get<double>()});
    c.curves[prefix + " bpc"].points.push_back({j.at("step").get<double>(), j.at("bpc").get<double>()});
    if (j.contains("accuracy")) {
      Series& s = c.accuracy[prefix];
      s.title = prefix;
      s.points.push_back({j.at("step").get<double>(), j.at("accuracy").get<double>()});
    }
    if (j.contains("spans")) add_spans(c, j, run);
  } else if (split == "probe") {
    add_probe(c, j);
  } else if (kind == "lag" || kind == "jacobian") {
    Series& s = (kind == "lag" ? c.lag_by : c.jac_by)[series];
    s.title = series;
    s.points.push_back({j.at(kind == "lag" ? "lag" : "k").get<double>(), j.at(kind == "lag" ? "grad_norm" : "frobenius").get<double>()});
  } else if (kind == "bias") {
    c.bias[j.at("policy").get<std::string>()][j.at("group").get<std::string>()] = j.at("rel_error").get<double>();
  }
}

Charts read_charts(const std::vector<fs::path>& files) {
  const std::vector<Line> lines = read_lines(files);
  const bool by_source = several_sources(lines);
  Charts c;
  std::set<std::string> runs;  // the directories the inputs come from
  for (const fs::path& f : files) runs.insert(f.parent_path().string());
  for (const Line& l : lines)
    on_line(l.file, l.lineno, [&] {
      const std::string policy = l.j.value("policy", "");
      const std::string run = runs.size() > 1 ? l.file.parent_path().filename().string() : "";
      add_line(c, l.j, by_source ? l.file.stem().string() + " " + l.j.value("source", "") + " " + policy : policy, run);
    });
  return c;
}

// The gnuplot script that draws the charts (their data files in data_dir, the PNGs one folder
// up); `made` gets the PNGs' names.
class Script {
 public:
  explicit Script(fs::path data_dir) : data_dir_(std::move(data_dir)) {}
  void chart(const std::string& name, const std::string& title, const std::string& xl, const std::string& yl,
             const std::vector<Series>& series, const std::string& extra, const std::string& style) {
    std::vector<Series> nonempty;
    for (const Series& s : series)
      if (!s.points.empty()) nonempty.push_back(s);
    if (nonempty.empty()) return;
    const std::string dat = write_data(data_dir_, name, nonempty);
    text += fmt::format("set output {}\nset title {}\nset xlabel {}\nset ylabel {}\n{}", quoted("../" + name + ".png"),
                        quoted(title), quoted(xl), quoted(yl), extra);
    text += plot_lines(dat, nonempty, style) + "unset logscale\n";
    made.push_back(name + ".png");
  }
  std::string text = "set terminal pngcairo size 900,560 noenhanced\nset grid\nset key outside right\n";
  std::vector<std::string> made;

 private:
  fs::path data_dir_;
};

std::vector<Series> values(const std::map<std::string, Series>& m) {
  std::vector<Series> v;
  for (const auto& [k, s] : m) v.push_back(s);
  return v;
}

// The series whose key ends with `suffix` (" loss", " bpc"), titled by their keys.
std::vector<Series> ending_with(const std::map<std::string, Series>& m, const std::string& suffix) {
  std::vector<Series> v;
  for (const auto& [k, s] : m)
    if (k.size() >= suffix.size() && k.compare(k.size() - suffix.size(), suffix.size(), suffix) == 0) {
      v.push_back(s);
      v.back().title = k;
    }
  return v;
}

// One bar per policy: the relative error of all parameters' gradient.
void bias_chart(Script& script, std::map<std::string, std::map<std::string, double>>& bias) {
  if (bias.empty()) return;
  Series s{"all parameters", {}};
  std::string xtics = "set xtics (";
  int i = 0;
  for (auto& [policy, groups] : bias) {
    s.points.push_back({double(i), groups.count("all") ? groups["all"] : 0.0});
    xtics += fmt::format("{}{} {}", i ? ", " : "", quoted(policy), i);
    ++i;
  }
  script.chart("truncation_bias", "truncation bias: ||g - g_none|| / ||g_none||", "policy", "relative error", {s},
               xtics + ")\nset style fill solid 0.6\nset boxwidth 0.6\nset yrange [0:*]\n", "boxes");
  script.text += "set xtics autofreq\nset yrange [*:*]\n";
}

// gnuplot on dir/plots.gp, started without a shell (nothing can become a command) in dir; what it
// printed goes into the error when it fails.
void run_gnuplot(const fs::path& dir) {
  int fds[2];
  check(::pipe(fds) == 0, "plot: cannot make a pipe for gnuplot: ", std::strerror(errno));
  posix_spawn_file_actions_t io;
  posix_spawn_file_actions_init(&io);
  posix_spawn_file_actions_adddup2(&io, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&io, fds[1], STDERR_FILENO);
  posix_spawn_file_actions_addclose(&io, fds[0]);
  posix_spawn_file_actions_addclose(&io, fds[1]);
  posix_spawn_file_actions_addchdir_np(&io, dir.c_str());
  std::string name = "gnuplot", script = "./plots.gp";  // ./: never read as an option
  char* argv[] = {name.data(), script.data(), nullptr};
  pid_t pid = 0;
  const int rc = ::posix_spawnp(&pid, "gnuplot", &io, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&io);
  ::close(fds[1]);
  std::string msg;
  char buf[512];
  for (ssize_t n; rc == 0 && (n = ::read(fds[0], buf, sizeof buf)) != 0;)
    if (n > 0) msg.append(buf, size_t(n));
    else if (errno != EINTR) break;
  ::close(fds[0]);
  if (rc != 0)
    throw std::runtime_error(std::string("cannot run gnuplot (install Debian's gnuplot-nox; ./run does): ") +
                             std::strerror(rc));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error("gnuplot failed (install Debian's gnuplot-nox; ./run does): " + msg.substr(0, 400));
}

}  // namespace

std::string gnuplot_script(const std::vector<std::string>& jsonl_files, const std::string& data_dir,
                           std::vector<std::string>& charts) {
  const std::vector<fs::path> files(jsonl_files.begin(), jsonl_files.end());
  Charts c = read_charts(files);
  Script script(data_dir);
  const std::string points = "linespoints pt 7 ps 0.4";
  script.chart("loss", "cross-entropy (nats per token)", "step", "loss", ending_with(c.curves, " loss"), "", points);
  script.chart("bpc", "bits per character", "step", "bpc", ending_with(c.curves, " bpc"), "", points);
  script.chart("grad_by_lag", "gradient norm of the last-position loss by memory lag", "lag (steps back)",
               "mean ||dL/dm||", values(c.lag_by), "set logscale y\n", points);
  script.chart("jacobian", "||d m_t / d m_(t-k)||_F", "k", "Frobenius norm", values(c.jac_by), "set logscale y\n", points);
  std::vector<Series> mixes;
  for (auto& [i, s] : c.mix) mixes.push_back(s);
  script.chart("layer_mix", "memory mix weights softmax(layer_weight)", "step", "weight", mixes, "", "lines lw 2");
  bias_chart(script, c.bias);
  script.chart("accuracy", "accuracy on the labelled positions", "step", "accuracy", values(c.accuracy),
               "set yrange [0:1]\n", points);
  script.text += "set yrange [*:*]\n";
  script.chart("spans", "adaptive attention span of each head", "step", "span (steps)", values(c.spans), "",
               "lines lw 2");
  charts = script.made;
  return script.text;
}

std::vector<std::string> plot_jsonl(const std::vector<std::string>& inputs, const std::string& out) {
  check(!inputs.empty(), "plot: no input");
  fs::path dir;
  std::vector<std::string> files;
  for (const std::string& input : inputs) {
    fs::path d;
    for (const fs::path& f : jsonl_inputs(input, d)) files.push_back(f.string());
    if (dir.empty()) dir = d;  // the charts go beside the first input by default
  }
  const fs::path out_dir = out.empty() ? (dir.empty() ? fs::path(".") : dir) : fs::path(out);
  fs::create_directories(out_dir);
  const fs::path tmp = out_dir / ".fbt-plot";
  fs::create_directories(tmp);
  std::vector<std::string> pngs;
  const std::string script = gnuplot_script(files, tmp.string(), pngs);
  check(!pngs.empty(), inputs[0], ": nothing to plot (no train/valid/probe/lag/jacobian/bias lines)");
  write_text_atomic((tmp / "plots.gp").string(), script);
  run_gnuplot(tmp);
  fs::remove_all(tmp);
  std::vector<std::string> made;
  for (const std::string& png : pngs) made.push_back((out_dir / png).string());
  return made;
}

}  // namespace fbt
