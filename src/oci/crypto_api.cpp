// libcrypto (OpenSSL's SHA-256 for digests, see digest.cpp), loaded on first use like libarchive
// (archive_api.cpp; common/shared_library.hpp says why): the few EVP functions aishell calls are
// defined here as forwarders to the real library, dlopened the first time one runs. Linking it
// costs every process about a millisecond before main (mapping and relocating 4.7 MB, OpenSSL's
// constructors) and its first use another few tenths (reading openssl.cnf): a third of a whole
// `ch-run`. `exec` of an unpacked image hashes nothing, so it no longer pays for it.
//
// Using another libcrypto function fails at link time with an undefined reference: add a
// forwarder below.
#include <openssl/evp.h>

#include "common/shared_library.hpp"

namespace {

struct CryptoApi {
    decltype(&::EVP_MD_CTX_new) md_ctx_new = nullptr;
    decltype(&::EVP_MD_CTX_free) md_ctx_free = nullptr;
    decltype(&::EVP_sha256) sha256 = nullptr;
    decltype(&::EVP_DigestInit_ex) digest_init_ex = nullptr;
    decltype(&::EVP_DigestUpdate) digest_update = nullptr;
    decltype(&::EVP_DigestFinal_ex) digest_final_ex = nullptr;

    explicit CryptoApi(const aishell::SharedLibrary& lib) {
        lib.bind(md_ctx_new, "EVP_MD_CTX_new");
        lib.bind(md_ctx_free, "EVP_MD_CTX_free");
        lib.bind(sha256, "EVP_sha256");
        lib.bind(digest_init_ex, "EVP_DigestInit_ex");
        lib.bind(digest_update, "EVP_DigestUpdate");
        lib.bind(digest_final_ex, "EVP_DigestFinal_ex");
    }
};

// Loaded once per process, on first use; immutable afterwards (thread-safe static init).
const CryptoApi& api() {
    static const aishell::SharedLibrary lib("libcrypto.so.3", "libssl3");
    static const CryptoApi table(lib);
    return table;
}

}  // namespace

extern "C" {

EVP_MD_CTX* EVP_MD_CTX_new(void) { return api().md_ctx_new(); }
void EVP_MD_CTX_free(EVP_MD_CTX* ctx) {
    if (ctx) api().md_ctx_free(ctx);  // as OpenSSL: freeing nothing is a no-op (and loads nothing)
}
const EVP_MD* EVP_sha256(void) { return api().sha256(); }
int EVP_DigestInit_ex(EVP_MD_CTX* ctx, const EVP_MD* type, ENGINE* impl) { return api().digest_init_ex(ctx, type, impl); }
int EVP_DigestUpdate(EVP_MD_CTX* ctx, const void* d, size_t cnt) { return api().digest_update(ctx, d, cnt); }
int EVP_DigestFinal_ex(EVP_MD_CTX* ctx, unsigned char* md, unsigned int* s) { return api().digest_final_ex(ctx, md, s); }

}  // extern "C"
