// `aishell login [REGISTRY] [-u USER] [--password-stdin] [--tls-verify=false]` and
// `aishell logout [REGISTRY]`: verify credentials against the registry, then keep them in the
// auth file Docker and podman read (auths -> "auth": base64(user:password), mode 0600).
#include <termios.h>
#include <unistd.h>

#include <iostream>
#include <string>

#include "cli/command.hpp"
#include "cli/progress.hpp"
#include "common/error.hpp"
#include "common/unique_fd.hpp"
#include "registry/auth.hpp"
#include "registry/client.hpp"
#include "registry/reference.hpp"

namespace aishell::cli {

namespace {

struct LoginOptions {
    std::string registry;
    std::string username;
    bool password_stdin = false;
    bool tls_verify = true;
};

// "https://index.docker.io/v1/" -> "docker.io"; "https://host:5000/" -> "host:5000".
std::string normalize_registry(std::string text) {
    if (text.empty()) return std::string(registry::kDockerHubDomain);
    if (auto sep = text.find("://"); sep != std::string::npos) text.erase(0, sep + 3);
    text = text.substr(0, text.find('/'));
    if (text == "index.docker.io" || text == "registry-1.docker.io" || text == "registry.hub.docker.com")
        return std::string(registry::kDockerHubDomain);
    if (text.empty()) throw Error("invalid registry name");
    return text;
}

std::string trim_newline(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    return s;
}

std::string read_stdin_all() {
    std::string data;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno("read password from stdin");
        }
        if (n == 0) break;
        data.append(buf, static_cast<std::size_t>(n));
        if (data.size() > 64 * 1024) throw Error("password on stdin is longer than 64 KiB");
    }
    return trim_newline(data);
}

// Restores the terminal's echo even when reading throws.
class EchoOff {
public:
    explicit EchoOff(int fd) : fd_(fd) {
        if (::tcgetattr(fd_, &saved_) == 0) {
            termios quiet = saved_;
            quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
            active_ = ::tcsetattr(fd_, TCSAFLUSH, &quiet) == 0;
        }
    }
    ~EchoOff() {
        if (active_) ::tcsetattr(fd_, TCSAFLUSH, &saved_);
    }
    EchoOff(const EchoOff&) = delete;
    EchoOff& operator=(const EchoOff&) = delete;

private:
    int fd_;
    termios saved_{};
    bool active_ = false;
};

std::string prompt(const std::string& question, bool echo) {
    std::cerr << question << std::flush;
    std::string answer;
    {
        std::optional<EchoOff> guard;
        if (!echo) guard.emplace(STDIN_FILENO);
        if (!std::getline(std::cin, answer)) throw Error("no input for \"" + question + "\"");
    }
    if (!echo) std::cerr << "\n";
    return trim_newline(answer);
}

int run_login(const CommandContext& ctx, const LoginOptions& o) {
    const std::string key = normalize_registry(o.registry);
    registry::Credentials creds;
    creds.username = o.username;
    const bool terminal = ::isatty(STDIN_FILENO);
    if (creds.username.empty()) {
        if (!terminal || o.password_stdin) throw Error("no user name", "pass it with -u USER");
        creds.username = prompt("Username: ", true);
    }
    if (o.password_stdin) {
        creds.password = read_stdin_all();
    } else if (terminal) {
        creds.password = prompt("Password: ", false);
    } else {
        throw Error("no password: stdin is not a terminal", "pipe it in with --password-stdin");
    }
    if (creds.username.empty() || creds.password.empty()) throw Error("user name and password must not be empty");

    with_context("log in to " + key, [&] {
        std::string host = key == registry::kDockerHubDomain ? std::string(registry::kDockerHubApiHost) : key;
        registry::ClientOptions options;
        options.tls_verify = o.tls_verify;
        options.debug = make_debug_log(ctx.global);
        InterruptWatcher interrupt;
        options.cancelled = [&interrupt] { return interrupt.cancelled(); };
        auto factory = registry::curl_transport_factory(
            registry::TlsOptions{o.tls_verify, registry::default_certs_dir()}, options.cancelled);
        registry::RegistryClient client(registry::Endpoint{host, std::nullopt}, key, "", creds, options);
        auto transport = factory();
        client.verify_login(*transport);
    });
    auto path = registry::auth_file_for_write();
    registry::update_auth_file(path, key, creds);
    std::cout << "Login Succeeded (credentials saved in " << path.string() << ")\n";
    return 0;
}

int run_logout(const std::string& registry_arg) {
    const std::string key = normalize_registry(registry_arg);
    auto path = registry::auth_file_for_write();
    if (!registry::update_auth_file(path, key, std::nullopt))
        throw Error("not logged in to " + key + " (no entry in " + path.string() + ")");
    std::cout << "Removed login credentials for " << key << "\n";
    return 0;
}

}  // namespace

void add_login_commands(CLI::App& app, CommandContext& ctx) {
    auto [login, o] = add_command<LoginOptions>(
        app, ctx, "login", "Log in to a registry (verifies, then saves the credentials)", run_login);
    login->add_option("registry", o->registry, "Registry host[:port] (default docker.io)");
    login->add_option("-u,--username", o->username, "User name");
    login->add_flag("--password-stdin", o->password_stdin, "Read the password from stdin");
    add_tls_verify_flag(*login, o->tls_verify);

    auto [logout, registry_arg] =
        add_command<std::string>(app, ctx, "logout", "Remove the saved credentials for a registry",
                                 [](CommandContext&, const std::string& arg) { return run_logout(arg); });
    logout->add_option("registry", *registry_arg, "Registry host[:port] (default docker.io)");
}

}  // namespace aishell::cli
