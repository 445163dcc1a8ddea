// libcurl, loaded on first use (see common/shared_library.hpp for why): this file defines the
// libcurl functions aishell calls as forwarders to the real library, which it dlopens the first
// time any of them runs. http.cpp and client.cpp include <curl/curl.h> and call libcurl as
// usual; the executable is not linked against libcurl (nor its TLS, HTTP/2, Kerberos and LDAP
// dependencies). A libcurl function not listed here fails at link time: add it below.
#define CURL_DISABLE_TYPECHECK  // the forwarders are the functions the checking macros call
#include <curl/curl.h>
#include <stdarg.h>

#include "common/shared_library.hpp"

#define AISHELL_CURL_FUNCTIONS(X) \
    X(curl_global_init)           \
    X(curl_easy_init)             \
    X(curl_easy_setopt)           \
    X(curl_easy_perform)          \
    X(curl_easy_cleanup)          \
    X(curl_easy_getinfo)          \
    X(curl_easy_reset)            \
    X(curl_easy_strerror)         \
    X(curl_slist_append)          \
    X(curl_slist_free_all)        \
    X(curl_getdate)

namespace {

struct CurlApi {
#define AISHELL_CURL_SLOT(name) decltype(&::name) name = nullptr;
    AISHELL_CURL_FUNCTIONS(AISHELL_CURL_SLOT)
#undef AISHELL_CURL_SLOT

    explicit CurlApi(const aishell::SharedLibrary& lib) {
#define AISHELL_CURL_BIND(name) lib.bind(this->name, #name);
        AISHELL_CURL_FUNCTIONS(AISHELL_CURL_BIND)
#undef AISHELL_CURL_BIND
    }
};

// Loaded once per process, on first use; immutable afterwards (thread-safe static init).
// Debian's libcurl4 is the OpenSSL flavour the project builds against.
const CurlApi& api() {
    static const aishell::SharedLibrary lib("libcurl.so.4", "libcurl4");
    static const CurlApi table(lib);
    return table;
}

}  // namespace

extern "C" {

CURLcode curl_global_init(long flags) { return api().curl_global_init(flags); }
CURL* curl_easy_init(void) { return api().curl_easy_init(); }
CURLcode curl_easy_perform(CURL* h) { return api().curl_easy_perform(h); }
void curl_easy_cleanup(CURL* h) { api().curl_easy_cleanup(h); }
void curl_easy_reset(CURL* h) { api().curl_easy_reset(h); }
const char* curl_easy_strerror(CURLcode code) { return api().curl_easy_strerror(code); }
struct curl_slist* curl_slist_append(struct curl_slist* list, const char* data) {
    return api().curl_slist_append(list, data);
}
void curl_slist_free_all(struct curl_slist* list) { api().curl_slist_free_all(list); }
time_t curl_getdate(const char* p, const time_t* unused) { return api().curl_getdate(p, unused); }

// Variadic: the argument's type follows from the option's number range, as in curl's own
// Curl_vsetopt (long, object or function pointer, curl_off_t, struct curl_blob*).
CURLcode curl_easy_setopt(CURL* h, CURLoption option, ...) {
    va_list ap;
    va_start(ap, option);
    CURLcode result;
    if (option < CURLOPTTYPE_OBJECTPOINT)
        result = api().curl_easy_setopt(h, option, va_arg(ap, long));
    else if (option < CURLOPTTYPE_FUNCTIONPOINT)
        result = api().curl_easy_setopt(h, option, va_arg(ap, void*));
    else if (option < CURLOPTTYPE_OFF_T)
        result = api().curl_easy_setopt(h, option, va_arg(ap, void (*)(void)));
    else if (option < CURLOPTTYPE_BLOB)
        result = api().curl_easy_setopt(h, option, va_arg(ap, curl_off_t));
    else
        result = api().curl_easy_setopt(h, option, va_arg(ap, void*));
    va_end(ap);
    return result;
}

// Every CURLINFO takes a pointer to where the value goes.
CURLcode curl_easy_getinfo(CURL* h, CURLINFO info, ...) {
    va_list ap;
    va_start(ap, info);
    void* out = va_arg(ap, void*);
    va_end(ap);
    return api().curl_easy_getinfo(h, info, out);
}

}  // extern "C"
