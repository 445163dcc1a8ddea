// .dockerignore as Docker's builder reads it: moby/patternmatcher/ignorefile.ReadAll for the
// file (comments, trimming, Clean, a leading "/" dropped) and patternmatcher's
// MatchesOrParentMatches for the decision (Go filepath.Match syntax, "**" across directories,
// "!" exceptions where the last matching pattern wins, a pattern matching a parent directory
// excludes everything beneath it). Paths are context-relative and slash-separated.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aishell::composer {

// The patterns of a .dockerignore file, in order, as ignorefile.ReadAll returns them
// ("!"-prefixed for exceptions). Throws aishell::Error "FILE:LINE: ..." for a pattern that
// filepath.Match would reject.
std::vector<std::string> read_dockerignore(std::string_view text, const std::string& filename = ".dockerignore");

class IgnoreMatcher {
public:
    // Throws aishell::Error for a malformed pattern ("[", a lone "!", a trailing "\").
    explicit IgnoreMatcher(const std::vector<std::string>& patterns);
    IgnoreMatcher(IgnoreMatcher&&) noexcept;
    IgnoreMatcher& operator=(IgnoreMatcher&&) noexcept;
    ~IgnoreMatcher();

    // True when path (or a parent dir of it) is excluded by the patterns. "." is never excluded.
    bool excluded(std::string_view path) const;
    bool included(std::string_view path) const { return !excluded(path); }
    // True when any pattern is an exception ("!..."): an excluded directory may then still hold
    // included entries, so a walk has to look inside it.
    bool has_exceptions() const { return has_exceptions_; }

private:
    struct Pattern;
    std::vector<std::unique_ptr<Pattern>> patterns_;
    bool has_exceptions_ = false;
};

// Which .dockerignore applies: "<Dockerfile>.dockerignore" beside the Dockerfile wins (BuildKit),
// else CONTEXT/.dockerignore; nullopt when neither exists.
std::optional<std::filesystem::path> find_dockerignore(const std::filesystem::path& context,
                                                       const std::filesystem::path& dockerfile);

// Every entry of the context that the builder sends, context-relative, sorted, directories
// included. Symlinks are listed, never followed. The parent directories of an included entry are
// included even when a pattern excludes them (as BuildKit's fsutil sends them).
std::vector<std::string> walk_context(const std::filesystem::path& context, const IgnoreMatcher& matcher);

}  // namespace aishell::composer
