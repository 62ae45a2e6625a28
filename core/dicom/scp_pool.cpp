// Temporary files made ahead of the C-STOREs that fill them.
//
// A received instance is written into a temporary file, flushed, renamed to its
// name and its directory flushed before the response goes out (scp_assoc.cpp).
// On ext4 without a journal the first flush of a new file also writes its
// directory (ext4_sync_parent), so a file created by the store itself costs one
// synchronous write more on the response's path than one created earlier and
// flushed then. This thread keeps a few such files ready; a store takes one, and
// DCMTK writes into it (truncating it: the same inode, already on disk under its
// name). tests/bench/durable_write.py measured one thread's durable writes of
// 128 KiB files at 1.34 ms into new files, 0.75 ms into pre-made ones (12-03).
//
// The files are made in the output directory itself, so the rename to the
// instance's name stays within one directory, covered by one flush of it. With
// --sort-by-study the names go into other directories, and no pool is used.
// A store finding the pool empty makes its own file, as before.
//
// Temporaries are never renamed until complete and durable, so those an SCP
// killed or cut off by a power loss left behind are no instance, only clutter (up
// to a whole instance each). Every SCP holds a shared flock on its directory while
// it serves it; one that finds no other holder (an exclusive lock succeeds) removes
// them first. Only names our own temporaries take are touched (fileio.cpp's
// temp_path_in: ".pool.XXXXXX", ".<SOP Instance UID>.dcm.XXXXXX"), so another
// program's hidden files in the directory stay.
#include "scp.hpp"

#include <cctype>
#include <cerrno>
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

namespace rtb {

namespace {

// mkstemp's suffix: six letters or digits.
bool temp_suffix(const std::string &s)
{
    if (s.size() != 6) return false;
    for (char c : s)
        if (!isalnum(static_cast<unsigned char>(c))) return false;
    return true;
}

// ".pool.XXXXXX" or ".<UID>.dcm.XXXXXX": a name temp_path_in gives in an SCP's directory.
bool scp_temporary(const std::string &name)
{
    if (name.size() < 8 || name[0] != '.' || name[name.size() - 7] != '.') return false;
    if (!temp_suffix(name.substr(name.size() - 6))) return false;
    std::string stem = name.substr(1, name.size() - 8);
    if (stem == "pool") return true;
    const std::string ext = ".dcm";
    if (stem.size() <= ext.size() || stem.compare(stem.size() - ext.size(), ext.size(), ext) != 0) return false;
    return rtb_dicom_uid_valid(stem.substr(0, stem.size() - ext.size()).c_str());
}

size_t remove_temporaries(const std::string &dir, int dir_fd)
{
    int fd = dup(dir_fd);
    DIR *d = fd >= 0 ? fdopendir(fd) : nullptr;
    if (!d) {
        if (fd >= 0) close(fd);
        return 0;
    }
    rewinddir(d);
    size_t removed = 0;
    while (struct dirent *e = readdir(d)) {
        struct stat st;
        if (!scp_temporary(e->d_name)) continue;
        if (fstatat(dir_fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) continue;
        if (unlinkat(dir_fd, e->d_name, 0) == 0) removed++;
    }
    closedir(d);
    if (removed > 0) {
        rtb_dicom_error err;
        clear_error(&err);
        (void)sync_dir(dir, &err);
    }
    return removed;
}

} // namespace

size_t claim_dir(const std::string &dir, int *lock_fd)
{
    *lock_fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (*lock_fd < 0) return 0;
    size_t removed = 0;
    if (flock(*lock_fd, LOCK_EX | LOCK_NB) == 0) removed = remove_temporaries(dir, *lock_fd);
    else if (errno != EWOULDBLOCK) {
        // No locks here (some network file systems): no way to know who else serves
        // the directory, so nothing is removed.
        close(*lock_fd);
        *lock_fd = -1;
        return 0;
    }
    // Shared from now on, so that another SCP starting on the directory sees us.
    if (flock(*lock_fd, LOCK_SH) != 0) {
        close(*lock_fd);
        *lock_fd = -1;
    }
    return removed;
}

TempPool::TempPool(std::string dir, size_t size) : dir_(std::move(dir)), size_(size)
{
    thread_ = std::thread([this] { fill(); });
}

TempPool::~TempPool()
{
    {
        std::lock_guard<std::mutex> lock(mu_);
        stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    for (auto &f : ready_) {
        close(f.first);
        unlink(f.second.c_str());
    }
}

std::string TempPool::take(int *fd)
{
    std::lock_guard<std::mutex> lock(mu_);
    *fd = -1;
    if (ready_.empty()) return std::string();
    auto f = ready_.front();
    ready_.pop_front();
    if (ready_.size() <= size_ / 2) cv_.notify_one();
    *fd = f.first;
    return f.second;
}

// Refills the pool when it is half empty: the files made, each flushed (its inode,
// and the directory naming it), then the directory once more for them all.
void TempPool::fill()
{
    for (;;) {
        size_t need;
        {
            std::unique_lock<std::mutex> lock(mu_);
            cv_.wait(lock, [this] { return stop_ || ready_.size() <= size_ / 2; });
            if (stop_) return;
            need = size_ - ready_.size();
        }
        std::vector<std::pair<int, std::string>> made;
        rtb_dicom_error err;
        clear_error(&err);
        for (size_t i = 0; i < need; i++) {
            int fd;
            std::string path = temp_path_in(dir_, "pool", &fd, &err);
            if (path.empty()) break;
            if (fsync(fd) != 0) {
                close(fd);
                unlink(path.c_str());
                break;
            }
            made.emplace_back(fd, path);
        }
        bool ok = !made.empty() && sync_dir(dir_, &err);
        std::unique_lock<std::mutex> lock(mu_);
        if (!ok) {
            // The disk refuses (full, read-only): the stores make their own files
            // and meet the error themselves, with the peer told why.
            for (auto &f : made) {
                close(f.first);
                unlink(f.second.c_str());
            }
            return;
        }
        for (auto &f : made) ready_.push_back(f);
    }
}

} // namespace rtb
