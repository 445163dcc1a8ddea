// JSON text out of aishell: the documents it writes for others, the text that identifies a
// build step, and the messages between its own processes.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

namespace aishell::oci {

// Every JSON document aishell writes for others to read goes through here: image configs,
// manifests, index.json, meta.json, build cache entries, Docker's config.json and the --json
// output of its commands. JSON text is UTF-8 (RFC 8259 section 8.1), but a string in it may
// not be: a Dockerfile written in Latin-1 (`LABEL author="Jos\xe9"`), a file name. Such a string
// never fails the write: each invalid sequence becomes U+FFFD, as Go's encoding/json writes it
// (Docker's and BuildKit's configs).
std::string json_document(const nlohmann::json& j, int indent = -1, char indent_char = ' ');

// The compact text json_document(j) gives when every string is UTF-8; a string that is not
// keeps its bytes. For text that names a build step (`RUN ["echo","caf\xe9"]`, a mount's
// spec): the step's cache key hashes it, so two steps that differ only in such bytes stay two
// steps; it becomes part of a document (the history's created_by) through json_document.
std::string json_key_text(const nlohmann::json& j);

// Messages between aishell's own processes (the build step helper and its specs): MessagePack,
// which carries strings as bytes both ways, so a RUN command or a path arrives as written.
std::string to_message(const nlohmann::json& j);
nlohmann::json from_message(std::string_view bytes);  // is_discarded() when malformed

}  // namespace aishell::oci
