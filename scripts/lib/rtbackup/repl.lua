--- rtbackup.repl: the operator's console.
-- Each input runs inside the REPL's task, so blocking calls (C-FIND, SQL) work as in
-- scripts, and tasks spawned here keep running while the prompt waits. Expressions
-- print their value; statements spanning lines are completed on the next lines.
local host = require "rtbackup.host"
local pretty = require "rtbackup.pretty"

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

local function print_results(results)
    local parts = {}
    for i = 1, results.n do parts[i] = pretty.format(results[i]) end
    if results.n > 0 then io.stdout:write(table.concat(parts, "\t"), "\n") end
    io.stdout:flush()
end

--- Runs the loop until end of input. `globals` are visible to every input (and
-- assignments land in them). Returns true when no input failed (always true on a
-- terminal, where a mistake is just the next prompt).
function repl.run(globals, opts)
    opts = opts or {}
    local interactive = host.isatty(0)
    local env = setmetatable(globals, {__index = _G})
    local prompt = (opts.name or "rtbackup") .. "> "
    local continuation = string.rep(" ", #prompt - 2) .. ">> "
    local history = interactive and history_path()
    if interactive then
        io.stdout:write(opts.banner or "", "\n")
        if history then host.history_load(history) end
    end

    local failures, buffer = 0, nil
    while true do
        local line = host.readline(buffer and continuation or prompt)
        if line == nil then break end
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
            local results = table.pack(xpcall(fn, function(e)
                if type(e) == "table" then
                    e.traceback = e.traceback or debug.traceback("", 2)
                    return e
                end
                return debug.traceback(tostring(e), 2)
            end))
            if results[1] then
                print_results(table.pack(table.unpack(results, 2, results.n)))
            else
                io.stderr:write(tostring(results[2]), "\n")
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
    end
    return interactive or failures == 0
end

repl.report = report
return repl
