// Group commit of received files. A C-STORE response may only go out once the
// file is durable under its final name, and every flush costs a device cache
// flush (milliseconds), whatever it covers. So workers queue their files and
// wait; one committer thread takes everything queued and makes it durable
// together:
//   1 file:   fdatasync(file), rename, fsync(dir)          (as rtb_ds_save does)
//   N files:  syncfs() once, rename each, fsync(each dir) once
// Data is durable before any name points at it, and every name is durable
// before any of the waiting workers answers. syncfs() also flushes whatever
// else is dirty on that file system: on a busy shared disk a round takes
// longer, but still one round for all the files waiting.
#include "scp.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <set>
#include <unistd.h>

namespace rtb {

namespace {

std::string dir_of(const std::string &path)
{
    size_t slash = path.rfind('/');
    if (slash == std::string::npos) return ".";
    if (slash == 0) return "/";
    return path.substr(0, slash);
}

bool fsync_dir(const std::string &dir, rtb_dicom_error *err)
{
    int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return fail(err, RTB_DICOM_E_IO, "cannot open %s: %s", dir.c_str(), strerror(errno)), false;
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    if (rc != 0) return fail(err, RTB_DICOM_E_IO, "fsync %s: %s", dir.c_str(), strerror(saved)), false;
    return true;
}

bool syncfs_of(const std::string &path, rtb_dicom_error *err)
{
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail(err, RTB_DICOM_E_IO, "cannot open %s: %s", path.c_str(), strerror(errno)), false;
    int rc = syncfs(fd);
    int saved = errno;
    close(fd);
    if (rc != 0) return fail(err, RTB_DICOM_E_IO, "syncfs: %s", strerror(saved)), false;
    return true;
}

} // namespace

Committer::Committer() : thread_([this] { run(); }) {}

Committer::~Committer()
{
    {
        std::lock_guard<std::mutex> lock(mu_);
        stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
}

bool Committer::commit(const std::string &tmp, const std::string &dest, rtb_dicom_error *err)
{
    Job job;
    job.tmp = tmp;
    job.dest = dest;
    clear_error(&job.err);
    std::unique_lock<std::mutex> lock(mu_);
    queue_.push_back(&job);
    cv_.notify_one();
    done_cv_.wait(lock, [&] { return job.done; });
    if (!job.ok && err) *err = job.err;
    return job.ok;
}

void Committer::run()
{
    std::vector<Job *> batch;
    for (;;) {
        {
            std::unique_lock<std::mutex> lock(mu_);
            cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
            if (queue_.empty()) return; // stopping, and nobody waits
            batch.assign(queue_.begin(), queue_.end());
            queue_.clear();
        }
        flush(batch);
        rounds_++;
        {
            std::lock_guard<std::mutex> lock(mu_);
            for (Job *j : batch) j->done = true;
        }
        done_cv_.notify_all();
    }
}

void Committer::flush(std::vector<Job *> &batch)
{
    if (batch.size() == 1) {
        Job *j = batch[0];
        j->ok = commit_file(j->tmp, j->dest, &j->err); // fsync, rename, fsync(dir); unlinks on failure
        return;
    }
    rtb_dicom_error err;
    clear_error(&err);
    if (!syncfs_of(batch[0]->tmp, &err)) {
        for (Job *j : batch) {
            j->ok = false;
            j->err = err;
            unlink(j->tmp.c_str());
        }
        return;
    }
    std::set<std::string> dirs;
    for (Job *j : batch) {
        if (rename(j->tmp.c_str(), j->dest.c_str()) != 0) {
            fail(&j->err, RTB_DICOM_E_IO, "rename %s -> %s: %s", j->tmp.c_str(), j->dest.c_str(), strerror(errno));
            unlink(j->tmp.c_str());
            j->ok = false;
            continue;
        }
        j->ok = true;
        dirs.insert(dir_of(j->dest));
    }
    for (const std::string &d : dirs) {
        if (fsync_dir(d, &err)) continue;
        // The name may not survive a power cut: the SCU must not be told it is safe.
        for (Job *j : batch)
            if (j->ok && dir_of(j->dest) == d) {
                j->ok = false;
                j->err = err;
            }
    }
}

} // namespace rtb
