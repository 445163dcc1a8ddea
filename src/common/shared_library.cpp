#include "common/shared_library.hpp"

#include <dlfcn.h>

#include "common/error.hpp"

namespace aishell {

SharedLibrary::SharedLibrary(const std::string& soname, const std::string& package)
    : soname_(soname), package_(package) {
    // RTLD_NODELETE: the library stays mapped at exit, when its own atexit handlers run.
    handle_ = ::dlopen(soname.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!handle_) {
        const char* why = ::dlerror();
        throw Error("cannot load " + soname + ": " + (why ? why : "unknown dlopen error"),
                    "install Debian's " + package + " package");
    }
}

SharedLibrary::~SharedLibrary() {
    if (handle_) ::dlclose(handle_);
}

void* SharedLibrary::symbol(const char* name) const {
    ::dlerror();
    void* p = ::dlsym(handle_, name);
    if (!p) throw Error(soname_ + " has no symbol " + name, "install a current " + package_ + " package");
    return p;
}

}  // namespace aishell
