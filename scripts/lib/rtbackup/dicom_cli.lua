--- rtbackup.dicom_cli: what the everyday DICOM commands (echo, find, move, get,
-- store, listen) share: peer options, query options, output formats.
local cli = require "rtbackup.cli"
local dicom = require "rtbackup.dicom"
local errors = require "rtbackup.error"
local log = require "rtbackup.log"

local M = {}

M.EXIT_CODES = "0 success, 1 DICOM failure (refused, unreachable, failed sub-operations), " ..
               "2 usage or configuration error"

-- DCMTK's spellings (echoscu, findscu, movescu, getscu, storescu), as their users type
-- them. lua-argparse reads "-aet" as the flags -a -e -t, so they are renamed to ours
-- before parsing; --help names both.
local DCMTK = {["-aet"] = "--aet", ["-aec"] = "--aec", ["-aem"] = "--move-dest-aet",
               ["--move"] = "--move-dest-aet", ["-to"] = "--connect-timeout", ["-ta"] = "--acse-timeout",
               ["-td"] = "--dimse-timeout", ["--timeout"] = "--connect-timeout",
               ["--acse-timeout"] = "--acse-timeout", ["--dimse-timeout"] = "--dimse-timeout",
               ["-od"] = "--out-dir", ["--output-directory"] = "--out-dir",
               ["-v"] = "--verbose", ["-d"] = "--debug"}

--- The command's arguments with DCMTK's option spellings turned into ours.
function M.dcmtk_args(args)
    local out = {}
    for i, a in ipairs(args) do out[i] = DCMTK[a] or a end
    return out
end

--- --env/--peer, or --aec/--host/--port (or DCMTK's positional `peer port`), and
-- --aet; the association timeouts.
function M.add_peer_options(parser)
    parser:argument("peer_host", "the peer's host name or IP address (DCMTK style; or --host)"):argname("<peer>"):args("?")
    parser:argument("peer_port", "the peer's port (DCMTK style; or --port)"):argname("<port>"):args("?")
    parser:option("--env", "environment to take the peer and our AE title from")
    parser:option("--peer", "source or backup target alias in --env (instead of --aec/--host/--port)")
    parser:option("--aet", "our (calling) AE title (default with --env: its script_ae.aet); DCMTK: -aet")
    parser:option("--aec", "the peer's (called) AE title; DCMTK: -aec")
    parser:option("--host", "the peer's host name or IP address")
    parser:option("--port", "the peer's port"):convert(cli.port("--port"))
    parser:option("--connect-timeout", "seconds to connect (default: the setting); DCMTK: -to")
          :convert(cli.seconds("--connect-timeout"))
    parser:option("--acse-timeout", "seconds for association messages; DCMTK: -ta")
          :convert(cli.seconds("--acse-timeout"))
    parser:option("--dimse-timeout", "seconds for DIMSE messages; DCMTK: -td")
          :convert(cli.seconds("--dimse-timeout"))
    parser:flag("--verbose", "log what happens (level info); DCMTK: -v")
    parser:flag("--debug", "log everything, associations included (level debug); DCMTK: -d")
end

local function usage(message)
    errors.raise{kind = "usage", message = message}
end

local function apply_timeouts(peer, args)
    for _, k in ipairs{"connect_timeout", "acse_timeout", "dimse_timeout"} do
        if args[k] then peer[k] = math.ceil(args[k]) end -- DCMTK counts whole seconds
    end
    -- As with movescu, the DIMSE timeout given is also the wait for a C-MOVE's responses
    -- (an environment's peer otherwise waits move_timeout for them).
    if args.dimse_timeout then peer.move_timeout = peer.dimse_timeout end
    return peer
end

--- The peer the options describe (and -v/-d applied to the log).
function M.peer(args)
    if args.debug then log.set_level("debug") elseif args.verbose then log.set_level("info") end
    -- DCMTK's positional `peer port`.
    if args.peer_host then
        if args.host and args.host ~= args.peer_host then usage("give the host once: --host or the PEER argument") end
        args.host = args.peer_host
    end
    if args.peer_port then
        local port, err = cli.port("port")(args.peer_port)
        if not port then usage(err) end
        args.port = port
    end
    local env = args.env and cli.load_env(args.env)
    -- With an environment, its audit log (setting audit_log) records what we touch,
    -- whichever way the peer is named.
    local ctx = require("rtbackup.context").new(env)
    if args.peer then
        if not env then usage("--peer needs --env ENV") end
        local peer = ctx:peer(args.peer)
        if args.aet then peer.calling_aet = args.aet end
        return apply_timeouts(peer, args), env
    end
    for _, opt in ipairs{"aec", "host", "port"} do
        if not args[opt] then usage("give --" .. opt .. " (or --env ENV --peer ALIAS)") end
    end
    local calling = args.aet or (env and env.script_ae and env.script_ae.aet)
    if not calling then usage("give --aet (our calling AE title) or --env ENV") end
    return apply_timeouts(dicom.peer{aet = args.aec, host = args.host, port = args.port, calling_aet = calling,
                                     alias = args.aec, ctx = ctx}, args), env
end

--- The files `store` sends for its --filepath paths: each path itself, or the regular
-- files under it (links followed; what cannot be read is listed too, and reported
-- unreadable by the store), sorted like `find -L path -type f | sort`. A path that does
-- not exist, an empty directory, or one that cannot be read is a usage error: sending part of a tree
-- without saying so would look like a complete send. A DICOMDIR met in a directory (a
-- CD or USB export's index; PS3.10 names it so) is no instance: it is left out and said
-- on stderr, not counted as a failure. Named itself, it is an item like any other
-- (reported unreadable: no instance).
function M.files_to_store(paths)
    local files = {}
    for _, path in ipairs(paths) do
        local ok, found = pcall(require("rtbackup.sys").walk, path)
        if not ok then
            usage("--filepath " .. path .. ": " .. (type(found) == "table" and found.message or tostring(found)))
        end
        if #found == 0 then usage("--filepath " .. path .. ": no such file or directory (or it is empty)") end
        local walked = not (#found == 1 and found[1] == path)
        for _, f in ipairs(found) do
            if walked and f:match("[^/]*$"):upper() == "DICOMDIR" then
                io.stderr:write("skipped: ", f, ": a DICOMDIR (the index of a medium), not an instance\n")
            else
                files[#files + 1] = f
            end
        end
    end
    return files
end

--- The query options of find/move/get.
function M.add_query_options(parser, default_level)
    parser:option("--query-level", "PATIENT, STUDY, SERIES or IMAGE", default_level)
          :choices{"PATIENT", "STUDY", "SERIES", "IMAGE", "patient", "study", "series", "image"}
    parser:option("--patient-id", "PatientID (wildcards allowed in find)")
    parser:option("--study-uid", "StudyInstanceUID")
    parser:option("--series-uid", "SeriesInstanceUID")
    parser:option("--sop-instance-uid", "SOPInstanceUID")
    parser:option("--modality", "Modality")
    parser:option("-k --key", "any attribute as Keyword=value (repeatable; Keyword= asks for it back); DCMTK: -k")
          :argname("<Keyword=value>"):count("*")
end

--- A query table from the options; `returns` lists keywords asked back empty.
function M.query(args, returns)
    local q = {level = args.query_level:upper()}
    for _, k in ipairs(returns or {}) do q[k] = "" end
    q.PatientID = args.patient_id or q.PatientID
    q.StudyInstanceUID = args.study_uid or q.StudyInstanceUID
    q.SeriesInstanceUID = args.series_uid or q.SeriesInstanceUID
    q.SOPInstanceUID = args.sop_instance_uid or q.SOPInstanceUID
    q.Modality = args.modality or q.Modality
    for _, kv in ipairs(args.key or {}) do
        local k, v = kv:match("^([%w,]+)=(.*)$")
        if not k then usage("-k " .. kv .. ": expected Keyword=value") end
        q[k] = v
    end
    return q
end

function M.add_format_option(parser)
    cli.add_format_option(parser)
end

local function cell(v)
    if v == nil then return "" end
    if type(v) == "table" then
        local parts = {}
        for i, x in ipairs(v) do parts[i] = type(x) == "table" and "[item]" or tostring(x) end
        return table.concat(parts, "\\")
    end
    return tostring(v)
end

local function csv_field(s)
    if s:find('[",\n]') then return '"' .. s:gsub('"', '""') .. '"' end
    return s
end

--- Prints rows (tables) with the given columns in the chosen format.
function M.print_rows(rows, columns, format)
    format = format or (require("rtbackup.host").isatty(1) and "table" or "csv")
    if format == "json" then
        local cjson = require "cjson"
        local out = {}
        for i, r in ipairs(rows) do
            local o = {}
            for _, c in ipairs(columns) do o[c] = r[c] ~= nil and r[c] or cjson.null end
            out[i] = o
        end
        io.stdout:write(#out == 0 and "[]" or cjson.encode(out), "\n")
        return
    end
    if format == "csv" then
        local line = {}
        for i, c in ipairs(columns) do line[i] = csv_field(c) end
        io.stdout:write(table.concat(line, ","), "\n")
        for _, r in ipairs(rows) do
            for i, c in ipairs(columns) do line[i] = csv_field(cell(r[c])) end
            io.stdout:write(table.concat(line, ","), "\n")
        end
        return
    end
    io.stdout:write(M.render_table(rows, columns))
end

--- The text of rows as an aligned table (header, rule, one line per row): what
-- `find` prints on a terminal, and how the REPL shows C-FIND matches.
function M.render_table(rows, columns)
    -- Widths in characters, not bytes: names like "Müller" must line up.
    local function width(s) return utf8.len(s) or #s end
    local widths = {}
    for i, c in ipairs(columns) do
        widths[i] = width(c)
        for _, r in ipairs(rows) do widths[i] = math.max(widths[i], width(cell(r[c]))) end
    end
    local out = {}
    local function line(values)
        local parts = {}
        for i, v in ipairs(values) do parts[i] = v .. string.rep(" ", widths[i] - width(v)) end
        out[#out + 1] = (table.concat(parts, "  "):gsub("%s+$", "")) .. "\n"
    end
    line(columns)
    local rule = {}
    for i in ipairs(columns) do rule[i] = string.rep("-", widths[i]) end
    line(rule)
    for _, r in ipairs(rows) do
        local values = {}
        for i, c in ipairs(columns) do values[i] = cell(r[c]) end
        line(values)
    end
    return table.concat(out)
end

--- Runs fn; a DICOM error becomes one line on stderr and exit code 1 (2 when the
-- input itself was wrong, e.g. an unknown keyword).
function M.run(fn)
    local ok, result = pcall(fn)
    if ok then return result end
    if errors.is(result) and result.kind ~= "usage" and result.kind ~= "config" then
        io.stderr:write("error: ", tostring(result), "\n")
        return result.kind == "invalid" and cli.EXIT.usage or cli.EXIT.failure
    end
    error(result, 0)
end

return M
