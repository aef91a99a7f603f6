// Errors raised by the C++ core. bindings.cpp maps them onto Python exceptions, so a bad argument
// reaches the user as ValueError / TypeError / RuntimeError with the op and the argument named.
#pragma once
#include <stdexcept>
#include <string>

namespace pyinv {

struct ValueError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
struct TypeError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// Check `cond`, else throw ValueError("<op>: <message>").
#define PYINV_CHECK(cond, op, message)                                   \
  do {                                                                   \
    if (!(cond)) throw ::pyinv::ValueError(std::string(op) + ": " + (message)); \
  } while (0)

}  // namespace pyinv
