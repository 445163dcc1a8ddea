// PathComponents: the components of a '/'-separated path, in order, as views into it. Empty
// components (a leading or trailing '/', "//") are left out; "." and ".." are given as they are,
// for the caller to clean by its own rules (Go's filepath.Clean for .dockerignore, a layer's
// root that ".." must not leave). No allocation.
#pragma once

#include <cstddef>
#include <iterator>
#include <string_view>

namespace aishell {

class PathComponents {
public:
    explicit PathComponents(std::string_view path) noexcept : path_(path) {}

    class iterator {
    public:
        using iterator_category = std::forward_iterator_tag;
        using value_type = std::string_view;
        using difference_type = std::ptrdiff_t;
        using pointer = const std::string_view*;
        using reference = std::string_view;

        iterator() noexcept = default;
        iterator(std::string_view path, std::size_t pos) noexcept : path_(path), pos_(pos) { settle(); }
        std::string_view operator*() const noexcept { return path_.substr(pos_, end_ - pos_); }
        iterator& operator++() noexcept {
            pos_ = end_;
            settle();
            return *this;
        }
        iterator operator++(int) noexcept {
            iterator before = *this;
            ++*this;
            return before;
        }
        bool operator==(const iterator& other) const noexcept { return pos_ == other.pos_; }

    private:
        // Skips the slashes at pos_ and finds where the component there ends.
        void settle() noexcept {
            while (pos_ < path_.size() && path_[pos_] == '/') ++pos_;
            end_ = path_.find('/', pos_);
            if (end_ == std::string_view::npos) end_ = path_.size();
        }

        std::string_view path_;
        std::size_t pos_ = 0;
        std::size_t end_ = 0;
    };

    iterator begin() const noexcept { return {path_, 0}; }
    iterator end() const noexcept { return {path_, path_.size()}; }

private:
    std::string_view path_;
};

}  // namespace aishell
