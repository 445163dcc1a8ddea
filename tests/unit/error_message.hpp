// message_of(fn): the message of the aishell::Error that fn throws, or "(no error)", for tests
// that check error text exactly as users read it.
#pragma once

#include <functional>
#include <string>

#include "common/error.hpp"

namespace aishell::test {

inline std::string message_of(const std::function<void()>& fn) {
    try {
        fn();
    } catch (const aishell::Error& e) {
        return e.message();
    }
    return "(no error)";
}

}  // namespace aishell::test
