// The values EXPOSE and STOPSIGNAL take, checked as Docker checks them (nat.ParsePortSpecs,
// signal.ParseSignal): split out of instructions.cpp, which parses the instructions around them.
#include <algorithm>
#include <cctype>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "composer/instructions.hpp"

namespace aishell::composer {

namespace {

std::string lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

}  // namespace

std::optional<std::string> port_spec_error(const std::string& spec) {
    // Docker's nat.ParsePortSpecs for EXPOSE: PORT or START-END, then an optional /PROTO.
    static const std::regex port("^([0-9]+)(-([0-9]+))?(/([a-zA-Z]+))?$");
    std::smatch m;
    if (!std::regex_match(spec, m, port)) return "invalid port specification: " + spec;
    auto number = [](const std::string& s) { return s.size() > 5 ? 70000L : std::stol(s); };
    long start = number(m[1].str());
    long end = m[3].matched ? number(m[3].str()) : start;
    if (start > 65535 || end > 65535) return "invalid port specification: " + spec + " (ports go up to 65535)";
    if (end < start) return "invalid port range: " + spec;
    std::string proto = lower(m[5].str());
    if (m[5].matched && proto != "tcp" && proto != "udp" && proto != "sctp") return "invalid proto: " + proto;
    return std::nullopt;
}

std::vector<std::string> exposed_ports(const std::string& spec) {
    if (auto error = port_spec_error(spec))
        throw Error("EXPOSE: " + *error, "PORT[/PROTO] or FROM-TO[/PROTO], e.g. 8080/tcp");
    // Valid: START[-END][/PROTO], numbers of at most five digits.
    auto slash = spec.find('/');
    std::string range = spec.substr(0, slash);
    std::string proto = slash == std::string::npos ? "tcp" : lower(spec.substr(slash + 1));
    auto dash = range.find('-');
    long start = std::stol(range.substr(0, dash));
    long end = dash == std::string::npos ? start : std::stol(range.substr(dash + 1));
    std::vector<std::string> out;
    for (long p = start; p <= end; ++p) out.push_back(std::to_string(p) + "/" + proto);
    return out;
}

std::optional<std::string> signal_error(const std::string& signal) {
    // moby's signal.ParseSignal on Linux: a non-zero number, or a name with or without "SIG".
    if (!signal.empty() && std::all_of(signal.begin(), signal.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        if (signal.size() > 9 || std::stol(signal) == 0) return "invalid signal: " + signal;
        return std::nullopt;
    }
    std::string name = signal;
    for (char& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (name.rfind("SIG", 0) == 0) name.erase(0, 3);
    static const std::vector<std::string> names = {
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL", "PIPE", "POLL",
        "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1",
        "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ", "RTMIN", "RTMAX"};
    if (std::find(names.begin(), names.end(), name) != names.end()) return std::nullopt;
    static const std::regex realtime("^RTMIN\\+([1-9]|1[0-5])$|^RTMAX-([1-9]|1[0-4])$");
    if (std::regex_match(name, realtime)) return std::nullopt;
    return "invalid signal: " + signal;
}

}  // namespace aishell::composer
