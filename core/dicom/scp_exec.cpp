// --exec-on-reception: a program run for each stored instance, as DCMTK's
// storescp does, but without a shell: the command is an argument vector, and
// the placeholders are replaced inside each argument, so whatever a peer puts
// in its AE title stays one argument and is never interpreted.
//   #p  directory the file was written to    #f  its file name
//   #a  calling AE title                     #c  called AE title (ours)
//   #r  remote address of the peer
// Commands run one at a time on a thread of their own, from a queue: a slow
// command delays the next command, never a C-STORE response.
#include "scp.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

namespace rtb {

namespace {

const size_t kMaxQueued = 100000; // beyond that, commands are skipped (and counted)

std::string expand(const std::string &arg, const ExecJob &job)
{
    std::string out;
    for (size_t i = 0; i < arg.size(); i++) {
        if (arg[i] == '#' && i + 1 < arg.size()) {
            const std::string *v = nullptr;
            switch (arg[i + 1]) {
            case 'p': v = &job.dir; break;
            case 'f': v = &job.file; break;
            case 'a': v = &job.calling_ae; break;
            case 'c': v = &job.called_ae; break;
            case 'r': v = &job.remote; break;
            default: break;
            }
            if (v) {
                out += *v;
                i++;
                continue;
            }
        }
        out += arg[i];
    }
    return out;
}

bool run_one(const std::vector<std::string> &templ, const ExecJob &job)
{
    std::vector<std::string> args;
    for (const std::string &a : templ) args.push_back(expand(a, job));
    std::vector<char *> argv;
    for (std::string &a : args) argv.push_back(&a[0]);
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) return false;
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

} // namespace

Executor::Executor(std::vector<std::string> argv) : argv_(std::move(argv)), thread_([this] { run(); }) {}

Executor::~Executor()
{
    finish();
}

void Executor::finish()
{
    {
        std::lock_guard<std::mutex> lock(mu_);
        stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join(); // runs what is still queued first: those instances were stored
}

void Executor::submit(ExecJob job)
{
    std::lock_guard<std::mutex> lock(mu_);
    if (queue_.size() >= kMaxQueued) {
        failed_++;
        return;
    }
    queue_.push_back(std::move(job));
    cv_.notify_one();
}

void Executor::run()
{
    for (;;) {
        ExecJob job;
        {
            std::unique_lock<std::mutex> lock(mu_);
            cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
            if (queue_.empty()) return;
            job = std::move(queue_.front());
            queue_.pop_front();
        }
        if (run_one(argv_, job)) ran_++;
        else failed_++;
    }
}

} // namespace rtb
