// print_error (error_line.hpp).
#include "cli/error_line.hpp"

#include <unistd.h>

#include <string>

#include "common/error.hpp"

namespace aishell::cli {

void print_error(std::string_view message, std::string_view hint) {
    std::string line = "aishell: error: ";
    line += message;
    if (!hint.empty()) line.append(" (hint: ").append(hint).append(")");
    line += '\n';
    // One write so the line is not interleaved with other output.
    (void)!::write(STDERR_FILENO, line.data(), line.size());
}

void print_error(const std::exception& e) {
    if (const auto* error = dynamic_cast<const Error*>(&e)) print_error(error->message(), error->hint());
    else print_error(e.what());
}

}  // namespace aishell::cli
