// Atomic file writes. A backup file is either complete or absent: we write a
// temporary file in the target directory (same file system, so rename is
// atomic), flush its data, rename it over the final name and flush the
// directory so the rename itself survives a power cut.
//
// The directory flush is shared (group commit): threads that renamed into the
// same directory at about the same time are all covered by one fsync of it, as
// long as that fsync started after their rename. See scp_assoc.cpp's top
// comment for what this buys the storage SCP.
#include "internal.hpp"

#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
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

std::string temp_path_in(const std::string &dir, const std::string &name, int *fd_out, rtb_dicom_error *err)
{
    *fd_out = -1;
    // The dot prefix keeps half-written files out of "*.dcm" globs and indexers.
    std::string tmpl = dir + "/." + name + ".XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    int fd = mkostemp(buf.data(), O_CLOEXEC);
    if (fd < 0) {
        fail(err, RTB_DICOM_E_IO, "cannot create a temporary file in %s: %s", dir.c_str(),
             strerror(errno));
        return std::string();
    }
    (void)fchmod(fd, file_mode());
    *fd_out = fd;
    return std::string(buf.data());
}

namespace {

// One directory's shared flushes. Each rename into it takes the next ticket;
// a flush covers the tickets handed out before it started. Flushes of one
// directory run one at a time, so each ends up covering a contiguous range.
struct DirGroup {
    std::mutex mu;
    std::condition_variable cv;
    uint64_t tickets = 0;  // renames done into the directory
    uint64_t covered = 0;  // tickets up to here were covered by a finished flush
    bool flushing = false;
    std::vector<std::pair<uint64_t, uint64_t>> failed; // ranges of tickets whose flush failed
    int failed_errno = 0;
};

std::mutex groups_mu;
std::map<std::string, std::shared_ptr<DirGroup>> groups;

std::shared_ptr<DirGroup> group_of(const std::string &dir)
{
    std::lock_guard<std::mutex> lock(groups_mu);
    auto it = groups.find(dir);
    if (it != groups.end()) return it->second;
    // --sort-by-study makes a directory per study: forget the idle ones now and
    // then. One still in use elsewhere stays valid for its holders; a new
    // group for the same directory merely shares less.
    if (groups.size() >= 256)
        for (auto i = groups.begin(); i != groups.end();)
            i = i->second.use_count() == 1 ? groups.erase(i) : std::next(i);
    auto g = std::make_shared<DirGroup>();
    groups.emplace(dir, g);
    return g;
}

int fsync_dir_errno(const std::string &dir)
{
    int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return errno;
    int rc = fsync(fd) == 0 ? 0 : errno;
    close(fd);
    return rc;
}

} // namespace

bool sync_dir(const std::string &dir, rtb_dicom_error *err)
{
    std::shared_ptr<DirGroup> g = group_of(dir);
    std::unique_lock<std::mutex> lock(g->mu);
    uint64_t ticket = ++g->tickets;
    while (g->covered < ticket) {
        if (g->flushing) {
            g->cv.wait(lock);
            continue;
        }
        // Lead: flush for every rename done so far, ours included.
        g->flushing = true;
        uint64_t from = g->covered + 1, upto = g->tickets;
        lock.unlock();
        int e = fsync_dir_errno(dir);
        lock.lock();
        g->flushing = false;
        g->covered = upto;
        if (e != 0) {
            // After a failed flush a later one may succeed without rewriting
            // what was lost: the tickets it covered stay failed.
            g->failed.emplace_back(from, upto);
            g->failed_errno = e;
        }
        g->cv.notify_all();
    }
    for (const auto &r : g->failed)
        if (ticket >= r.first && ticket <= r.second) {
            int e = g->failed_errno;
            lock.unlock();
            fail(err, RTB_DICOM_E_IO, "fsync %s: %s", dir.c_str(), strerror(e));
            return false;
        }
    return true;
}

// fdatasync flushes the data and what reading it back needs (size, allocation);
// only the times are left to later writeback. Closes fd; removes tmp on failure.
static bool flush_and_close(int fd, const std::string &tmp, rtb_dicom_error *err)
{
    if (fdatasync(fd) != 0) {
        int saved = errno;
        close(fd);
        unlink(tmp.c_str());
        fail(err, RTB_DICOM_E_IO, "fdatasync %s: %s", tmp.c_str(), strerror(saved));
        return false;
    }
    close(fd);
    return true;
}

bool commit_fd(int fd, const std::string &tmp, const std::string &dest, rtb_dicom_error *err)
{
    if (!flush_and_close(fd, tmp, err)) return false;
    if (rename(tmp.c_str(), dest.c_str()) != 0) {
        fail(err, RTB_DICOM_E_IO, "rename %s -> %s: %s", tmp.c_str(), dest.c_str(),
             strerror(errno));
        unlink(tmp.c_str());
        return false;
    }
    return sync_dir(dir_of(dest), err);
}

// Where the data set of a DICOM file begins: after its File Meta Information, whose
// group length (0002,0000) follows the preamble and "DICM" (PS3.10 7.1); 0 when the
// file does not start so.
static long dataset_offset(FILE *f)
{
    unsigned char head[144];
    if (fread(head, 1, sizeof head, f) != sizeof head || memcmp(head + 128, "DICM", 4) != 0 ||
        memcmp(head + 132, "\x02\x00\x00\x00UL\x04\x00", 8) != 0)
        return 0;
    return 144L + (long)(head[140] | head[141] << 8 | head[142] << 16 | (unsigned long)head[143] << 24);
}

// Whether two DICOM files hold the same data set bytes (their meta headers may differ:
// the sender's AE title is in it).
static bool same_dataset(const std::string &a, const std::string &b)
{
    FILE *fa = fopen(a.c_str(), "rb"), *fb = fopen(b.c_str(), "rb");
    bool same = fa && fb;
    if (same) {
        long oa = dataset_offset(fa), ob = dataset_offset(fb);
        same = fseek(fa, oa, SEEK_SET) == 0 && fseek(fb, ob, SEEK_SET) == 0;
    }
    char x[65536], y[65536];
    while (same) {
        size_t n = fread(x, 1, sizeof x, fa), m = fread(y, 1, sizeof y, fb);
        if (n != m || memcmp(x, y, n) != 0) same = false;
        else if (n == 0) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

bool commit_fd_keeping(int fd, const std::string &tmp, const std::string &dest, std::string *final_out,
                       rtb_dicom_error *err)
{
    if (!flush_and_close(fd, tmp, err)) return false;
    size_t dot = dest.rfind('.'), slash = dest.rfind('/');
    std::string stem = dest, ext;
    if (dot != std::string::npos && (slash == std::string::npos || dot > slash)) stem = dest.substr(0, dot), ext = dest.substr(dot);
    for (int k = 1; k <= 1000; k++) {
        std::string candidate = k == 1 ? dest : stem + "." + std::to_string(k) + ext;
        // RENAME_NOREPLACE: two receivers of one UID at once cannot both take a name.
        if (renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, candidate.c_str(), RENAME_NOREPLACE) == 0) {
            *final_out = candidate;
            return sync_dir(dir_of(candidate), err);
        }
        if (errno != EEXIST) {
            fail(err, RTB_DICOM_E_IO, "rename %s -> %s: %s", tmp.c_str(), candidate.c_str(), strerror(errno));
            unlink(tmp.c_str());
            return false;
        }
        if (same_dataset(tmp, candidate)) { // a repeat: what is there is it, durable already
            unlink(tmp.c_str());
            *final_out = candidate;
            return true;
        }
    }
    fail(err, RTB_DICOM_E_IO, "%s: a thousand different instances under one name", dest.c_str());
    unlink(tmp.c_str());
    return false;
}

bool save_atomic(DcmFileFormat &ff, const std::string &path, E_TransferSyntax xfer,
                 rtb_dicom_error *err)
{
    int fd;
    std::string tmp = temp_path_in(dir_of(path), base_of(path), &fd, err);
    if (tmp.empty()) return false;
    // A fresh meta header: MediaStorage SOP Class/Instance and TransferSyntaxUID
    // must describe what is written now, not what was read.
    OFCondition cond = ff.saveFile(tmp.c_str(), xfer, EET_ExplicitLength, EGL_recalcGL,
                                   EPD_noChange, 0, 0, EWM_createNewMeta);
    if (cond.bad()) {
        close(fd);
        unlink(tmp.c_str());
        fail(err, RTB_DICOM_E_IO, "cannot write %s: %s", path.c_str(), cond.text());
        return false;
    }
    // DCMTK wrote through a descriptor of its own; the data is flushed through ours
    // (one file, one page cache).
    return commit_fd(fd, tmp, path, err);
}

} // namespace rtb
