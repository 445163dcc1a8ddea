// stable_hash_hex: a short, fast, non-cryptographic name for some bytes (FNV-1a, 64 bit, as 16
// lowercase hex digits), the same on every machine and build. For naming files and catching
// bit rot, where whoever relies on the name also compares what it names (a collision only makes
// two things share a file name) and libcrypto would cost a millisecond of loading: the seccomp
// cache's entries and checksums, the user namespace holder's record.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace aishell {

inline std::string stable_hash_hex(std::string_view data) {
    std::uint64_t h = 0xcbf29ce484222325ull;
    for (unsigned char c : data) h = (h ^ c) * 0x100000001b3ull;
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
    return buf;
}

}  // namespace aishell
