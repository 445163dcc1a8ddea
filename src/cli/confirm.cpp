#include "cli/confirm.hpp"

#include <unistd.h>

#include <iostream>

#include "common/error.hpp"

namespace aishell::cli {

bool confirm(const std::string& question, const std::string& hint) {
    if (!::isatty(STDIN_FILENO))
        throw Error("not removing anything without a confirmation, and stdin is not a terminal to ask on",
                    hint);
    std::cerr << question << " [y/N] " << std::flush;
    std::string answer;
    if (!std::getline(std::cin, answer)) return false;
    return answer == "y" || answer == "Y" || answer == "yes" || answer == "Yes";
}

}  // namespace aishell::cli
