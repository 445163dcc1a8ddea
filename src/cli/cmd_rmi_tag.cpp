// `aishell rmi NAME...` and `aishell tag SRC DST`: the user's names for images in index.json.
// Both refuse the chain's names (aishell:foundation, aishell:base, aishell:ext-*), which only the
// chain makes, moves and removes (composer/chain_names.hpp). rmi removes the name only; the
// blobs and layer trees go at the next `aishell volumes prune`, as `docker rmi` leaves layers a
// build cache still needs.
#include <iostream>
#include <string>
#include <vector>

#include "cli/command.hpp"
#include "cli/store_commands.hpp"
#include "cli/image_lookup.hpp"
#include "common/error.hpp"
#include "composer/chain_names.hpp"
#include "oci/lease.hpp"
#include "registry/reference.hpp"

namespace aishell::cli {

namespace {

void refuse_chain_name(const std::string& name, std::string_view verb) {
    if (auto why = composer::chain_name_refusal(name, verb)) throw Error(*why);
}

// How many index.json names point at digest.
std::size_t names_of(const oci::Store& store, const oci::Digest& digest) {
    std::size_t n = 0;
    for (const auto& e : store.list_images())
        if (e.descriptor.digest == digest) ++n;
    return n;
}

// podman refuses to remove an image a running container uses (`image is in use by a
// container`); docker does too for a running one. Only the last name matters: with another
// name left the image stays and the running command loses nothing.
void refuse_in_use(const oci::Store& store, const oci::LeaseRemovalLock& held, const oci::ImageEntry& entry) {
    if (names_of(store, entry.descriptor.digest) > 1) return;
    const oci::LiveLeases leased = oci::read_live_leases(held);
    if (leased.blobs.count(entry.descriptor.digest))
        throw Error("image " + entry.name + " is in use by a running container or build",
                    "stop it first; the name can be removed once it has ended");
}

int run_rmi(const CommandContext& ctx, const std::vector<std::string>& names) {
    for (const auto& name : names) refuse_chain_name(name, "removed");
    oci::Store store = open_store(ctx.global);
    auto lock = store.lock_exclusive();
    // Held while the leases are read and the name goes: a run that starts meanwhile waits,
    // then finds the name gone (lease.hpp: lease, then look).
    oci::LeaseRemovalLock held(store);
    for (const auto& name : names) {
        oci::ImageEntry entry = require_local_image(store, name);
        refuse_chain_name(entry.name, "removed");  // `aishell:base` typed some other way
        refuse_in_use(store, held, entry);
        store.untag_image(entry.name);
        std::cout << "Untagged: " << entry.name << "\n";
    }
    return 0;
}

int run_tag(const CommandContext& ctx, const std::string& source, const std::string& target) {
    refuse_chain_name(target, "overwritten by tag");
    // The same grammar as pull and build -t (docker's reference.ParseNormalizedNamed); the name
    // is kept as typed, as build -t keeps it.
    with_context("tag " + target, [&] { return registry::Reference::parse(target); });
    oci::Store store = open_store(ctx.global);
    auto lock = store.lock_exclusive();
    oci::ImageEntry entry = require_local_image(store, source);
    store.tag_image(target, entry.descriptor);
    return 0;
}

}  // namespace

void add_rmi_tag_commands(CLI::App& app, CommandContext& ctx) {
    auto [rmi, names] = add_command<std::vector<std::string>>(
        app, ctx, "rmi", "Remove image names (their data goes at the next `volumes prune`)", run_rmi);
    rmi->add_option("NAME", *names, "Image names")->required();

    auto [tag, pair] = add_command<std::pair<std::string, std::string>>(
        app, ctx, "tag", "Give an image another name",
        [](CommandContext& c, const auto& names) { return run_tag(c, names.first, names.second); });
    tag->add_option("SOURCE", pair->first, "Image to name")->required();
    tag->add_option("TARGET", pair->second, "New name")->required();
}

}  // namespace aishell::cli
