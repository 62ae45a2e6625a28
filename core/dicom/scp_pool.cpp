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
#include "scp.hpp"

#include <fcntl.h>
#include <unistd.h>

namespace rtb {

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
