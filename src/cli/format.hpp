// Human-readable output helpers for commands that list things: aligned tables, sizes, ages.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace aishell::cli {

// Left-aligned columns separated by three spaces, as podman and docker print them.
class Table {
public:
    explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
    void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
    std::string render() const;

private:
    std::vector<std::vector<std::string>> rows_;
};

// 1234567 -> "1.23 MB" (decimal units, as docker and podman).
std::string human_size(std::int64_t bytes);
// "5242880", "512k", "5m", "5MiB", "1g" -> bytes: binary units, as Docker's RAMInBytes reads
// them (b, k, m, g, with an optional "b" or "ib"; any case). Throws Error naming the field
// (what: "--chunk-size") on anything else, zero, or more than 2^62.
std::uint64_t parse_size(std::string_view text, std::string_view what);
// RFC 3339 timestamp -> "3 days ago"; "" or unparsable -> "unknown".
std::string human_age(const std::string& rfc3339, std::int64_t now_epoch = -1);

}  // namespace aishell::cli
