// The cuda suite's main: without a usable GPU every test reports "skipped" (exit 77).
#define DOCTEST_CONFIG_IMPLEMENT
#include <cstdio>
#include <string>

#include "backend/cuda/kernels.hpp"
#include "tests/run_cases.hpp"

REGISTER_LISTENER("case counter", 1, fbt::testing::CaseCounter);

int main(int argc, char** argv) {
  std::string why;
  if (!fbt::cuda::available(&why)) {
    std::printf("no usable CUDA device (%s): skipping\n", why.c_str());
    return 77;
  }
  return fbt::testing::run_cases(argc, argv);
}
