#define DOCTEST_CONFIG_IMPLEMENT
#include "tests/run_cases.hpp"

REGISTER_LISTENER("case counter", 1, fbt::testing::CaseCounter);

int main(int argc, char** argv) { return fbt::testing::run_cases(argc, argv); }
