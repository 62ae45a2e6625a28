--- rtbackup.files: the file conventions of rtbackup's own files, on rtbackup.sys.
--
-- Files that may name patients (journal, summaries, spool, audit log) live in the
-- state dir, created 0700, and are created 0600; files for other programs (metrics
-- for node_exporter) are 0644. Replaced files are written to "<path>.tmp.<pid>",
-- fsynced and renamed; a temporary left behind by a killed process is removed the
-- next time its file is written.
local sys = require "rtbackup.sys"

local files = {PRIVATE = 384, SHARED = 420, PRIVATE_DIR = 448} -- 0600, 0644, 0700

local function dir_and_base(path)
    local dir, base = path:match("^(.*)/([^/]+)$")
    if not dir then return ".", path end
    return dir == "" and "/" or dir, base
end

--- Removes "<path>.tmp.<pid>" files whose process no longer runs.
function files.remove_stale_temporaries(path)
    local dir, base = dir_and_base(path)
    local ok, names = pcall(sys.list, dir)
    if not ok then return end
    local prefix = base .. ".tmp."
    for _, name in ipairs(names) do
        if name:sub(1, #prefix) == prefix then
            local pid = name:sub(#prefix + 1)
            if pid:match("^%d+$") and not sys.stat("/proc/" .. pid) then os.remove(dir .. "/" .. name) end
        end
    end
end

--- Replaces path with text, atomically and durably; mode defaults to 0600.
function files.replace(path, text, mode)
    files.remove_stale_temporaries(path)
    sys.write_file(path, text, {mode = mode or files.PRIVATE})
end

--- Creates a private directory (0700) with its parents; an existing one is kept as
-- it is (its mode is the operator's choice; `rtbackup health` warns when others can
-- read it).
function files.private_dir(path)
    sys.mkdir(path, files.PRIVATE_DIR)
    return path
end

--- True when others (not the owner or group) can read what is at path.
function files.world_readable(path)
    local st = sys.stat(path)
    return st ~= nil and (st.mode & 4) ~= 0 -- the "other: read" bit
end

return files
