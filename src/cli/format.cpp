#include "cli/format.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <ctime>

#include "common/error.hpp"
#include "common/parse_number.hpp"

namespace aishell::cli {

std::string Table::render() const {
    std::vector<std::size_t> widths;
    for (const auto& row : rows_) {
        if (widths.size() < row.size()) widths.resize(row.size(), 0);
        for (std::size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
    }
    std::string out;
    for (const auto& row : rows_) {
        std::string line;
        for (std::size_t i = 0; i < row.size(); ++i) {
            line += row[i];
            if (i + 1 < row.size()) line.append(widths[i] - row[i].size() + 3, ' ');
        }
        out += line + '\n';
    }
    return out;
}

std::uint64_t parse_size(std::string_view text, std::string_view what) {
    constexpr std::string_view kHint = "a number of bytes, or with a unit: 512k, 5m, 1g";
    const std::string quoted = std::string(what) + " \"" + std::string(text) + "\"";
    const auto digits = std::min(text.find_first_not_of("0123456789"), text.size());
    // The digits through the one checked integer parser (common/parse_number.hpp); too many of
    // them is out of range like a value that overflows with its unit.
    const auto value = to_number<std::uint64_t>(text.substr(0, digits));
    if (digits == 0) throw Error(quoted + " is not a size", std::string(kHint));
    std::string unit;
    for (char c : text.substr(digits)) unit += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    int shift = 0;
    if (!unit.empty() && unit != "b") {
        static constexpr std::string_view kUnits = "kmg";
        auto at = kUnits.find(unit[0]);
        std::string_view rest = std::string_view(unit).substr(1);
        if (at == std::string_view::npos || !(rest.empty() || rest == "b" || rest == "ib"))
            throw Error(quoted + " is not a size", std::string(kHint));
        shift = 10 * static_cast<int>(at + 1);
    }
    if (!value || *value == 0 || *value > (std::uint64_t{1} << (62 - shift)))
        throw Error(quoted + " is out of range (1 byte to 4 EiB)", std::string(kHint));
    return *value << shift;
}

std::string human_size(std::int64_t bytes) {
    static const char* units[] = {"B", "kB", "MB", "GB", "TB"};
    double value = static_cast<double>(bytes);
    int unit = 0;
    while (value >= 1000.0 && unit < 4) {
        value /= 1000.0;
        ++unit;
    }
    char buf[32];
    if (unit == 0)
        std::snprintf(buf, sizeof buf, "%lld B", static_cast<long long>(bytes));
    else
        std::snprintf(buf, sizeof buf, "%.3g %s", value, units[unit]);
    return buf;
}

namespace {
std::int64_t parse_rfc3339(const std::string& text) {
    std::tm tm{};
    int year, month, day, hour, minute, second;
    if (std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d", &year, &month, &day, &hour, &minute, &second) != 6)
        return -1;
    tm.tm_year = year - 1900;
    tm.tm_mon = month - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = minute;
    tm.tm_sec = second;
    return static_cast<std::int64_t>(timegm(&tm));  // zone offsets other than Z are rare in images
}

std::string plural(std::int64_t n, const char* unit) {
    return std::to_string(n) + " " + unit + (n == 1 ? "" : "s") + " ago";
}
}  // namespace

std::string human_age(const std::string& rfc3339, std::int64_t now_epoch) {
    std::int64_t then = parse_rfc3339(rfc3339);
    if (then < 0) return "unknown";
    if (now_epoch < 0) now_epoch = static_cast<std::int64_t>(std::time(nullptr));
    std::int64_t age = std::max<std::int64_t>(0, now_epoch - then);
    if (age < 60) return plural(age, "second");
    if (age < 3600) return plural(age / 60, "minute");
    if (age < 86400) return plural(age / 3600, "hour");
    if (age < 86400 * 14) return plural(age / 86400, "day");
    if (age < 86400 * 60) return plural(age / (86400 * 7), "week");
    if (age < 86400 * 730) return plural(age / (86400 * 30), "month");
    return plural(age / (86400 * 365), "year");
}

}  // namespace aishell::cli
