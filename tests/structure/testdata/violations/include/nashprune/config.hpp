// A leaf: includes nothing of the library.
#pragma once
#include <cstdint>
