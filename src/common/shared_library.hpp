// SharedLibrary: a library loaded with dlopen on first use instead of at process start.
//
// aishell's hot path (`exec` of an unpacked image) needs neither libcurl nor libarchive, but
// linking them makes the dynamic loader map and relocate ~40 libraries (libcurl's TLS, HTTP/2,
// Kerberos and LDAP stack; libarchive's libxml2 and ICU) before main: about 12 million of the
// 18 million instructions of `aishell --version`, and tens of milliseconds on a loaded machine.
// The modules that use them define the library's functions themselves as thin forwarders
// (src/registry/curl_api.cpp, src/oci/archive_api.cpp) that load the real library here the
// first time one is called, as systemd does for its optional libraries.
#pragma once

#include <string>

namespace aishell {

class SharedLibrary {
public:
    // dlopen(soname) with RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE. Throws Error naming the
    // library and, as the hint, the Debian package that provides it.
    SharedLibrary(const std::string& soname, const std::string& package);
    SharedLibrary(const SharedLibrary&) = delete;
    SharedLibrary& operator=(const SharedLibrary&) = delete;
    ~SharedLibrary();

    // The address of a symbol of this library (not of the executable's forwarder of the
    // same name). Throws Error when it is missing (a library older than the headers).
    void* symbol(const char* name) const;

    template <class Fn>
    void bind(Fn*& slot, const char* name) const {
        slot = reinterpret_cast<Fn*>(symbol(name));
    }

private:
    std::string soname_, package_;
    void* handle_ = nullptr;
};

}  // namespace aishell
