// Atomic file writes. A backup file is either complete or absent: we write a
// temporary file in the target directory (same file system, so rename is
// atomic), fsync it, rename it over the final name and fsync the directory so
// the rename itself survives a power cut.
#include "internal.hpp"

#include <cerrno>
#include <cstdio>
#include <mutex>
#include <sys/stat.h>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

namespace rtb {

static std::string dir_of(const std::string &path)
{
    size_t slash = path.rfind('/');
    if (slash == std::string::npos) return ".";
    if (slash == 0) return "/";
    return path.substr(0, slash);
}

static std::string base_of(const std::string &path)
{
    size_t slash = path.rfind('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

// mkstemp creates 0600 files; a stored instance should get the permissions any
// other new file gets. umask() cannot be read without changing it (racy with
// other threads), so read it once from /proc.
static mode_t file_mode()
{
    static std::once_flag once;
    static mode_t mode = 0644;
    std::call_once(once, [] {
        FILE *f = fopen("/proc/self/status", "re");
        if (!f) return;
        char line[256];
        unsigned mask;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "Umask: %o", &mask) == 1) {
                mode = static_cast<mode_t>(0666 & ~mask);
                break;
            }
        fclose(f);
    });
    return mode;
}

std::string temp_path_in(const std::string &dir, const std::string &name, rtb_dicom_error *err)
{
    // The dot prefix keeps half-written files out of "*.dcm" globs and indexers.
    std::string tmpl = dir + "/." + name + ".XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    int fd = mkstemp(buf.data());
    if (fd < 0) {
        fail(err, RTB_DICOM_E_IO, "cannot create a temporary file in %s: %s", dir.c_str(),
             strerror(errno));
        return std::string();
    }
    (void)fchmod(fd, file_mode());
    close(fd);
    return std::string(buf.data());
}

static bool fsync_path(const char *path, int flags, rtb_dicom_error *err)
{
    int fd = open(path, flags | O_CLOEXEC);
    if (fd < 0) {
        fail(err, RTB_DICOM_E_IO, "cannot open %s for fsync: %s", path, strerror(errno));
        return false;
    }
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    if (rc != 0) {
        fail(err, RTB_DICOM_E_IO, "fsync %s: %s", path, strerror(saved));
        return false;
    }
    return true;
}

bool commit_file(const std::string &tmp, const std::string &dest, rtb_dicom_error *err)
{
    if (!fsync_path(tmp.c_str(), O_RDONLY, err)) {
        unlink(tmp.c_str());
        return false;
    }
    if (rename(tmp.c_str(), dest.c_str()) != 0) {
        fail(err, RTB_DICOM_E_IO, "rename %s -> %s: %s", tmp.c_str(), dest.c_str(),
             strerror(errno));
        unlink(tmp.c_str());
        return false;
    }
    return fsync_path(dir_of(dest).c_str(), O_RDONLY | O_DIRECTORY, err);
}

bool save_atomic(DcmFileFormat &ff, const std::string &path, E_TransferSyntax xfer,
                 rtb_dicom_error *err)
{
    std::string tmp = temp_path_in(dir_of(path), base_of(path), err);
    if (tmp.empty()) return false;
    // A fresh meta header: MediaStorage SOP Class/Instance and TransferSyntaxUID
    // must describe what is written now, not what was read.
    OFCondition cond = ff.saveFile(tmp.c_str(), xfer, EET_ExplicitLength, EGL_recalcGL,
                                   EPD_noChange, 0, 0, EWM_createNewMeta);
    if (cond.bad()) {
        unlink(tmp.c_str());
        fail(err, RTB_DICOM_E_IO, "cannot write %s: %s", path.c_str(), cond.text());
        return false;
    }
    return commit_file(tmp, path, err);
}

} // namespace rtb
