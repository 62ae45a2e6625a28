/* Adapter over toml++: reads the environment files and turns each top-level table
 * into a plain C tree (rtb_cfg_node) that validate.c and resolve.c work on.
 *
 * toml++ reports errors by throwing (the Debian library is built with exceptions),
 * so every entry point catches everything: no exception may cross into C. */
#include "internal.h"

#include <toml++/toml.h>

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <new>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

struct rtb_config {
    /* Nodes point at these names (rtb_cfg_node.file); each string is allocated on its
     * own so the pointers survive the vector growing. */
    std::vector<std::unique_ptr<std::string>> files;
    std::vector<rtb_cfg_node *> envs; /* load order; key = environment name */

    rtb_config() = default;
    rtb_config(const rtb_config &) = delete;
    rtb_config &operator=(const rtb_config &) = delete;
    ~rtb_config()
    {
        for (rtb_cfg_node *env : envs)
            rtb_cfg_node_free(env);
    }
};

namespace {

struct node_deleter {
    void operator()(rtb_cfg_node *n) const { rtb_cfg_node_free(n); }
};
using node_ptr = std::unique_ptr<rtb_cfg_node, node_deleter>;

struct file_closer {
    void operator()(std::FILE *f) const { std::fclose(f); }
};

char *copy_string(std::string_view s)
{
    char *p = static_cast<char *>(std::malloc(s.size() + 1));
    if (p == nullptr)
        throw std::bad_alloc();
    std::memcpy(p, s.data(), s.size());
    p[s.size()] = '\0';
    return p;
}

rtb_cfg_node *new_node()
{
    auto *n = static_cast<rtb_cfg_node *>(std::calloc(1, sizeof(rtb_cfg_node)));
    if (n == nullptr)
        throw std::bad_alloc();
    return n;
}

/* Zeroed children are valid empty tables, so a tree that is only partly filled when
 * an allocation fails can still be freed. */
rtb_cfg_node *new_children(size_t n)
{
    if (n == 0)
        return nullptr;
    auto *c = static_cast<rtb_cfg_node *>(std::calloc(n, sizeof(rtb_cfg_node)));
    if (c == nullptr)
        throw std::bad_alloc();
    return c;
}

int line_of(const toml::node &n)
{
    return static_cast<int>(n.source().begin.line);
}

rtb_cfg_kind kind_of(const toml::node &n)
{
    switch (n.type()) {
    case toml::node_type::table: return RTB_CFG_TABLE;
    case toml::node_type::array: return RTB_CFG_ARRAY;
    case toml::node_type::string: return RTB_CFG_STRING;
    case toml::node_type::integer: return RTB_CFG_INTEGER;
    case toml::node_type::floating_point: return RTB_CFG_FLOAT;
    case toml::node_type::boolean: return RTB_CFG_BOOLEAN;
    default: return RTB_CFG_DATETIME; /* date, time, date-time */
    }
}

using member = std::pair<const toml::key *, const toml::node *>;

/* toml++ keeps table members sorted by key (a std::map). Site engineers expect to see
 * them in the order they wrote them, so restore that from where each key first
 * appeared; a key's position is the header or line that created it. */
std::vector<member> in_file_order(const toml::table &t)
{
    std::vector<member> members;
    members.reserve(t.size());
    for (auto &&[k, v] : t)
        members.emplace_back(&k, &v);
    std::stable_sort(members.begin(), members.end(), [](const member &a, const member &b) {
        return a.first->source().begin < b.first->source().begin;
    });
    return members;
}

class converter {
public:
    explicit converter(const char *file) : file_(file) {}

    void fill(rtb_cfg_node *out, const toml::node &in) const
    {
        out->kind = kind_of(in);
        out->file = file_;
        out->line = line_of(in);
        switch (out->kind) {
        case RTB_CFG_TABLE: fill_table(out, *in.as_table()); break;
        case RTB_CFG_ARRAY: fill_array(out, *in.as_array()); break;
        case RTB_CFG_STRING: out->string = copy_string(in.as_string()->get()); break;
        case RTB_CFG_INTEGER: out->integer = in.as_integer()->get(); break;
        case RTB_CFG_FLOAT: out->number = in.as_floating_point()->get(); break;
        case RTB_CFG_BOOLEAN: out->boolean = in.as_boolean()->get() ? 1 : 0; break;
        case RTB_CFG_DATETIME: out->string = datetime_text(in); break;
        }
    }

private:
    const char *file_;

    void fill_table(rtb_cfg_node *out, const toml::table &t) const
    {
        std::vector<member> members = in_file_order(t);
        out->children = new_children(members.size());
        out->n_children = members.size();
        for (size_t i = 0; i < members.size(); i++) {
            out->children[i].key = copy_string(members[i].first->str());
            fill(&out->children[i], *members[i].second);
        }
    }

    void fill_array(rtb_cfg_node *out, const toml::array &a) const
    {
        out->children = new_children(a.size());
        out->n_children = a.size();
        for (size_t i = 0; i < a.size(); i++)
            fill(&out->children[i], a[i]);
    }

    /* Dates and times are kept as TOML writes them (ISO 8601); nothing in the
     * configuration needs arithmetic on them. */
    static char *datetime_text(const toml::node &in)
    {
        std::ostringstream text;
        in.visit([&text](auto &&value) {
            using T = std::decay_t<decltype(value)>;
            if constexpr (toml::is_date<T> || toml::is_time<T> || toml::is_date_time<T>)
                text << value;
        });
        return copy_string(text.str());
    }
};

class loader {
public:
    loader(rtb_config &cfg, rtb_cfg_problems *problems) : cfg_(cfg), problems_(problems) {}

    int errors() const { return errors_; }

    void load_path(const char *path)
    {
        struct stat st;
        if (::stat(path, &st) != 0) {
            cannot_read(path, errno);
            return;
        }
        if (S_ISDIR(st.st_mode))
            load_directory(path);
        else
            load_file(path);
    }

    /* noexcept: also used from the catch handlers of rtb_config_load. */
    void error(const char *file, int line, const char *env, const char *message) noexcept
    {
        errors_++;
        rtb_cfg_problem_add(problems_, RTB_CFG_ERROR, file, line, env, nullptr, "%s", message);
    }

    void error(const char *file, int line, const char *env, const std::string &message) noexcept
    {
        error(file, line, env, message.c_str());
    }

private:
    rtb_config &cfg_;
    rtb_cfg_problems *problems_;
    int errors_ = 0;

    void cannot_read(const char *path, int err)
    {
        error(path, 0, nullptr, std::string("cannot read the configuration: ") + std::strerror(err));
    }

    /* Every *.toml file, in name order so that the load order (and thus the order of
     * environments and of "defined twice" messages) does not depend on the file
     * system. Hidden files are skipped: editors leave ".#ucla.toml"-style files. */
    void load_directory(const std::string &dir)
    {
        namespace fs = std::filesystem;
        std::error_code ec;
        std::vector<std::string> names;
        for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
            std::string name = it->path().filename().string();
            if (name[0] != '.' && it->path().extension() == ".toml" && it->is_regular_file(ec))
                names.push_back(name);
        }
        if (ec) {
            error(dir.c_str(), 0, nullptr, "cannot list the directory: " + ec.message());
            return;
        }
        if (names.empty()) {
            error(dir.c_str(), 0, nullptr, "no *.toml files in the directory");
            return;
        }
        std::sort(names.begin(), names.end());
        for (const std::string &name : names)
            load_file((fs::path(dir) / name).string());
    }

    void load_file(const std::string &path)
    {
        cfg_.files.push_back(std::make_unique<std::string>(path));
        const char *file = cfg_.files.back()->c_str();
        std::string text;
        if (!read_all(file, text))
            return;
        try {
            toml::table root = toml::parse(text, path);
            add_environments(root, file);
        } catch (const toml::parse_error &e) {
            error(file, static_cast<int>(e.source().begin.line), nullptr, std::string(e.description()));
        }
    }

    bool read_all(const char *file, std::string &text)
    {
        std::unique_ptr<std::FILE, file_closer> f(std::fopen(file, "rb"));
        if (!f) {
            cannot_read(file, errno);
            return false;
        }
        char buf[8192];
        size_t n;
        while ((n = std::fread(buf, 1, sizeof buf, f.get())) > 0)
            text.append(buf, n);
        if (std::ferror(f.get())) {
            cannot_read(file, errno);
            return false;
        }
        return true;
    }

    void add_environments(const toml::table &root, const char *file)
    {
        for (const member &m : in_file_order(root)) {
            std::string name(m.first->str());
            const toml::node &value = *m.second;
            if (!value.is_table()) {
                error(file, line_of(value), nullptr,
                      "top-level key \"" + name + "\" is " + rtb_cfg_kind_phrase(kind_of(value)) +
                          "; only environments (tables such as [UCLA]) may be defined at the top level");
                continue;
            }
            if (const char *first = rtb_config_env_file(&cfg_, name.c_str())) {
                error(file, line_of(value), name.c_str(),
                      "environment \"" + name + "\" is defined in both " + first + " and " + file);
                continue;
            }
            node_ptr env(new_node());
            env->key = copy_string(name);
            converter(file).fill(env.get(), value);
            cfg_.envs.reserve(cfg_.envs.size() + 1); /* so push_back cannot throw */
            cfg_.envs.push_back(env.release());
        }
    }
};

} // namespace

extern "C" {

int rtb_config_load(const char *path, rtb_config **out, rtb_cfg_problems *problems)
{
    *out = nullptr;
    rtb_config *cfg = new (std::nothrow) rtb_config();
    if (cfg == nullptr) {
        rtb_cfg_problem_add(problems, RTB_CFG_ERROR, path, 0, nullptr, nullptr, "out of memory");
        return -1;
    }
    *out = cfg;
    loader load(*cfg, problems);
    try {
        load.load_path(path);
    } catch (const std::bad_alloc &) {
        load.error(path, 0, nullptr, "out of memory while loading the configuration");
    } catch (const std::exception &e) {
        load.error(path, 0, nullptr, e.what());
    } catch (...) {
        load.error(path, 0, nullptr, "cannot load the configuration");
    }
    return load.errors() == 0 ? 0 : -1;
}

void rtb_config_free(rtb_config *cfg)
{
    delete cfg;
}

size_t rtb_config_env_count(const rtb_config *cfg)
{
    return cfg ? cfg->envs.size() : 0;
}

const char *rtb_config_env_name(const rtb_config *cfg, size_t i)
{
    return cfg && i < cfg->envs.size() ? cfg->envs[i]->key : nullptr;
}

const rtb_cfg_node *rtb_config_env(const rtb_config *cfg, const char *name)
{
    if (cfg == nullptr || name == nullptr)
        return nullptr;
    for (const rtb_cfg_node *env : cfg->envs)
        if (std::strcmp(env->key, name) == 0)
            return env;
    return nullptr;
}

const char *rtb_config_env_file(const rtb_config *cfg, const char *name)
{
    const rtb_cfg_node *env = rtb_config_env(cfg, name);
    return env ? env->file : nullptr;
}

} // extern "C"
