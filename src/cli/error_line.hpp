// The one place an error becomes what the user reads: a single line on stderr,
// "aishell: error: MESSAGE (hint: HINT)". main() prints what escapes a command, exec prints
// before its 125 status, and the hidden helpers' errors reach it through main() too.
#pragma once

#include <exception>
#include <string_view>

namespace aishell::cli {

void print_error(std::string_view message, std::string_view hint = {});
// An aishell::Error with its hint; any other exception by what().
void print_error(const std::exception& e);

}  // namespace aishell::cli
