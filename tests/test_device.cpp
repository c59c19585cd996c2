#include <doctest/doctest.h>
TEST_CASE("device: placeholder") {}
