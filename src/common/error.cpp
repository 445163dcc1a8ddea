#include "common/error.hpp"

#include <cstring>

namespace aishell {

namespace {
std::string describe(int err, std::string_view operation, std::string_view object) {
    std::string out(operation);
    if (!object.empty()) {
        out += ' ';
        out += object;
    }
    out += ": ";
    out += std::strerror(err);
    return out;
}
}  // namespace

SystemError::SystemError(int err, std::string_view operation, std::string_view object)
    : Error(describe(err, operation, object)), errno_(err) {}

void throw_errno(std::string_view operation, std::string_view object) {
    throw SystemError(errno, operation, object);
}

}  // namespace aishell
