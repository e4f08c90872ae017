// Built against an installed nashprune by the package_find_package_consumer test.
#include <nashprune/nashprune.hpp>

#include <cstring>
#include <iostream>

int main() {
  std::cout << "nashprune " << nashprune::version_string << " found\n";
  return std::strcmp(nashprune::version_string, "0.1.0") == 0 ? 0 : 1;
}
