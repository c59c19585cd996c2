// The test programs' main: doctest's, plus a check that a --test-case filter ran something. meson
// runs every case as its own test with its name as the filter, and a filter that matches nothing
// (a comma in a name splits it, for one) would otherwise pass without running a line.
#pragma once
#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>

namespace fbt::testing {

// Counts the test cases that start (a doctest listener: it reports nothing).
struct CaseCounter : doctest::IReporter {
  static inline int started = 0;
  explicit CaseCounter(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats&) override {}
  void test_case_start(const doctest::TestCaseData&) override { ++started; }
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {}
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}
};

inline int run_cases(int argc, char** argv) {
  doctest::Context ctx(argc, argv);
  const int rc = ctx.run();
  if (ctx.shouldExit()) return rc;
  bool filtered = false;
  for (int i = 1; i < argc; ++i) filtered = filtered || std::strncmp(argv[i], "--test-case=", 12) == 0;
  if (rc == 0 && filtered && CaseCounter::started == 0) {
    std::fprintf(stderr, "no test case matches the filter (escape a comma in a name as \\,)\n");
    return 1;
  }
  return rc;
}

}  // namespace fbt::testing
