--- rtbackup.repl: the operator's console.
-- Each input runs as a task of its own, so blocking calls (C-FIND, SQL) work as in
-- scripts, and tasks spawned here keep running while the prompt waits. Expressions
-- print their value (rtbackup.pretty.show); statements spanning lines are completed on
-- the next lines. On a terminal: help() (rtbackup.help), Tab completes names, Ctrl-C
-- drops the line being typed or interrupts the running input (never the REPL).
local help = require "rtbackup.help"
local host = require "rtbackup.host"
local pretty = require "rtbackup.pretty"
local task = require "rtbackup.task"

local repl = {}

local function history_path()
    local explicit = os.getenv("RTBACKUP_HISTORY")
    if explicit then return explicit end
    local home = os.getenv("HOME")
    return home and (home .. "/.rtbackup_history") or nil
end

local function compile(source, env)
    -- An expression first, so that `env.sources` prints; then a statement.
    local fn = load("return " .. source, "=repl", "t", env)
    if fn then return fn end
    return load(source, "=repl", "t", env)
end

local function is_incomplete(err)
    return err:sub(-5) == "<eof>"
end

local function report(err)
    if type(err) == "table" then
        io.stderr:write(tostring(err), "\n")
    else
        io.stderr:write(debug.traceback(tostring(err), 3), "\n")
    end
end

-- A call of a peer's echo() returns seconds: shown as a duration.
local function hint_of(source)
    if source:match(":%s*echo%s*%(%s*%)%s*$") then return "seconds" end
    return nil
end

local function print_results(results, hint)
    local parts = {}
    for i = 1, results.n do parts[i] = pretty.show(results[i], hint) end
    if results.n > 0 then io.stdout:write(table.concat(parts, "\t"), "\n") end
    io.stdout:flush()
end

-- ---- completion --------------------------------------------------------------------

local KEYWORDS = {"and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if", "in",
                  "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while"}
local MAX_NAMES, MAX_DEPTH = 20000, 4

-- Every name Tab may offer: globals, and below them table keys and methods, as dotted
-- paths ("env.sources.", "dicom.peer("), walked to a few levels without calling any
-- metamethod but __index tables (methods of objects).
local function completion_names(env)
    local names, seen = {}, {}
    for _, k in ipairs(KEYWORDS) do names[#names + 1] = k end
    local function walk(t, prefix, depth)
        if seen[t] or #names >= MAX_NAMES then return end
        seen[t] = true
        local function add(k, v)
            if type(k) ~= "string" or not k:match("^[%a_][%w_]*$") or #names >= MAX_NAMES then return end
            local path = prefix .. k
            if type(v) == "function" then
                names[#names + 1] = path .. "("
            elseif type(v) == "table" then
                names[#names + 1] = path .. "."
                if depth < MAX_DEPTH then walk(v, path .. ".", depth + 1) end
            else
                names[#names + 1] = path
            end
        end
        for k, v in next, t do add(k, v) end
        local mt = getmetatable(t)
        if type(mt) == "table" and type(mt.__index) == "table" and mt.__index ~= t then
            for k, v in next, mt.__index do add(k, v) end
        end
        seen[t] = nil
    end
    -- Globals: the REPL's own (env, ctx, dicom, ...) over Lua's; not _G or package,
    -- which hold everything again.
    local top = {}
    for k, v in next, _G do top[k] = v end
    for k, v in next, env do top[k] = v end
    top._G, top.package = nil, nil
    walk(top, "", 1)
    names[#names + 1] = "_G."
    names[#names + 1] = "package."
    table.sort(names)
    local unique = {}
    for i, n in ipairs(names) do if n ~= names[i - 1] then unique[#unique + 1] = n end end
    return unique
end

local function alias_names(env)
    local list = {}
    local e = rawget(env, "env")
    if type(e) == "table" then
        for _, group in ipairs{"sources", "backup_targets"} do
            for alias in pairs(e[group] or {}) do list[#list + 1] = alias end
        end
    end
    table.sort(list)
    return list
end

-- ---- evaluation ----------------------------------------------------------------------

local handler = task.traceback

-- Runs fn as a task that a Ctrl-C interrupts. Returns the packed xpcall results, or
-- nil when the operator interrupted it while it waited (it then ends by itself when
-- what it waits for comes back, with the interruption as its error).
local function evaluate(fn, interactive)
    if not interactive then return table.pack(xpcall(fn, handler)) end
    host.interrupts() -- forget a Ctrl-C that came between inputs
    local t = task.spawn(function()
        host.interrupt_target(true)
        local r = table.pack(xpcall(fn, handler))
        host.interrupt_target(false)
        return r
    end)
    local pause = 0
    while true do
        local status = t:status()
        if status == "done" or status == "failed" then
            local ok, r = pcall(t.wait, t)
            if ok then return r end
            return table.pack(false, r)
        end
        if host.interrupts() > 0 then return nil end
        if pause == 0 then coroutine.yield() else task.sleep(pause) end
        pause = math.min(pause * 2 + 1, 50)
    end
end

--- Runs the loop until end of input. `globals` are visible to every input (and
-- assignments land in them). Returns true when no input failed (always true on a
-- terminal, where a mistake is just the next prompt).
function repl.run(globals, opts)
    opts = opts or {}
    local interactive = host.isatty(0)
    if globals.help == nil then
        globals.help = function(v) io.stdout:write(help.text(v, globals)) end
    end
    local env = setmetatable(globals, {__index = _G})
    local prompt = (opts.name or "rtbackup") .. "> "
    local continuation = string.rep(" ", #prompt - 2) .. ">> "
    local history = interactive and history_path()
    if interactive then
        io.stdout:write(opts.banner or "", "\n")
        if history then host.history_load(history) end
        host.catch_interrupts(true)
    end

    local failures, buffer = 0, nil
    while true do
        if interactive then host.set_completions(completion_names(env), alias_names(env)) end
        local line = host.readline(buffer and continuation or prompt)
        if line == nil then break end
        if line == false then -- Ctrl-C: the line (and any unfinished input) is dropped
            io.stdout:write("^C\n")
            buffer = nil
            goto continue
        end
        local source = buffer and (buffer .. "\n" .. line) or line
        if source:match("^%s*$") then goto continue end
        local fn, err = compile(source, env)
        if not fn and is_incomplete(err) then
            buffer = source
            goto continue
        end
        buffer = nil
        if interactive then host.add_history(source) end
        if not fn then
            io.stderr:write(err, "\n")
            failures = failures + 1
        else
            local results = evaluate(fn, interactive)
            if results == nil then
                io.stderr:write("interrupted (a DICOM or SQL call under way finishes in the background)\n")
            elseif results[1] then
                print_results(table.pack(table.unpack(results, 2, results.n)), hint_of(source))
            else
                local e = results[2]
                if type(e) == "table" and e.kind == "interrupted" then
                    io.stderr:write("interrupted\n")
                else
                    io.stderr:write(type(e) == "table" and pretty.show(e) or tostring(e), "\n")
                end
                failures = failures + 1
            end
        end
        ::continue::
    end
    if buffer then
        io.stderr:write("incomplete input at end: ", buffer, "\n")
        failures = failures + 1
    end
    if interactive then
        io.stdout:write("\n")
        if history then host.history_save(history) end
        host.catch_interrupts(false)
        host.line_editor_end()
    end
    return interactive or failures == 0
end

repl.report = report
return repl
