// ISA-L (igzip inflate for gzip layers, see layer_extract.cpp), loaded on first use like
// libarchive (archive_api.cpp; common/shared_library.hpp says why): the functions aishell calls
// are defined here as forwarders to the real library, dlopened the first time one runs, so
// `exec` of an unpacked image does not map it. A gzip layer without the library fails with an
// error naming Debian's libisal2.
#include <isa-l/igzip_lib.h>

#include "common/shared_library.hpp"

namespace {

struct IsalApi {
    decltype(&::isal_inflate_init) inflate_init = nullptr;
    decltype(&::isal_inflate_reset) inflate_reset = nullptr;
    decltype(&::isal_inflate) inflate = nullptr;

    explicit IsalApi(const aishell::SharedLibrary& lib) {
        lib.bind(inflate_init, "isal_inflate_init");
        lib.bind(inflate_reset, "isal_inflate_reset");
        lib.bind(inflate, "isal_inflate");
    }
};

// Loaded once per process, on first use; immutable afterwards (thread-safe static init).
const IsalApi& api() {
    static const aishell::SharedLibrary lib("libisal.so.2", "libisal2");
    static const IsalApi table(lib);
    return table;
}

}  // namespace

extern "C" {

void isal_inflate_init(struct inflate_state* state) { api().inflate_init(state); }
void isal_inflate_reset(struct inflate_state* state) { api().inflate_reset(state); }
int isal_inflate(struct inflate_state* state) { return api().inflate(state); }

}  // extern "C"
