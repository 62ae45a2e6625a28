--- rtbackup.help: the API's documentation, read from the `---` doc comments in the
-- modules' own source files when asked, so there is no second copy to keep in step.
--
--   help()              -- what the REPL offers
--   help(dicom)         -- a module: its summary and every function's first line
--   help(dicom.peer)    -- a function: its signature and its whole comment
--   help(peer)          -- an object: the methods of its class
--
-- A doc comment is a block of `--` lines directly above a `function` line whose first
-- line starts with `---`; a module's is the block at the top of its file. Functions
-- written in C have their documentation in the C sources and README, not here.
local help = {}

local file_lines = {}

local function lines_of(path)
    if file_lines[path] == nil then
        local f = io.open(path, "r")
        local lines = false
        if f then
            lines = {}
            for line in f:lines() do lines[#lines + 1] = line end
            f:close()
        end
        file_lines[path] = lines
    end
    return file_lines[path] or nil
end

local function strip(line)
    return (line:gsub("^%s*%-%-%-?%s?", ""))
end

-- The doc comment above line `n` of path: its lines, or nil when there is none.
local function doc_above(path, n)
    local lines = lines_of(path)
    if not lines then return nil end
    local first = n - 1
    while first >= 1 and lines[first]:match("^%s*%-%-") do first = first - 1 end
    first = first + 1
    if first >= n or not lines[first]:match("^%s*%-%-%-") then return nil end
    local out = {}
    for i = first, n - 1 do out[#out + 1] = strip(lines[i]) end
    return out
end

-- A module file's opening comment block.
local function module_doc(path)
    local lines = lines_of(path)
    if not lines or not (lines[1] or ""):match("^%-%-%-") then return nil end
    local out = {}
    for i = 1, #lines do
        if not lines[i]:match("^%-%-") then break end
        out[#out + 1] = strip(lines[i])
    end
    return out
end

local function source_of(fn)
    local info = debug.getinfo(fn, "S")
    if info.what ~= "Lua" or not info.source:match("^@") then return nil end
    return info.source:sub(2), info.linedefined
end

--- The signature and doc lines of a Lua function, or nil for a C function.
function help.of_function(fn)
    local path, line = source_of(fn)
    if not path then return nil end
    local lines = lines_of(path)
    local signature = lines and lines[line] and lines[line]:match("function%s+([^%s].-%))") or "function"
    return signature, doc_above(path, line) or {}
end

local function module_name(t)
    for name, v in pairs(package.loaded) do
        if v == t and type(name) == "string" then return name end
    end
    return nil
end

local function module_path(name)
    return package.searchpath(name, package.path)
end

local function sorted_functions(t)
    local names = {}
    for k, v in pairs(t) do
        if type(k) == "string" and type(v) == "function" and not k:match("^_") then names[#names + 1] = k end
    end
    table.sort(names)
    return names
end

local function function_list(t, prefix, sep, out)
    for _, name in ipairs(sorted_functions(t)) do
        local signature, doc = help.of_function(t[name])
        local first = doc and doc[1] or (signature and "" or "(written in C)")
        local shown = signature and signature:gsub("^[%w_.]+[.:]", prefix .. sep) or (prefix .. sep .. name .. "(...)")
        out[#out + 1] = string.format("  %-44s %s", shown, first)
    end
end

-- The class of an object: the table its metatable's __index is.
local function class_of(v)
    local mt = getmetatable(v)
    if type(mt) == "table" and type(mt.__index) == "table" then return mt.__index end
    if type(mt) == "table" and type(mt.methods) == "table" then return mt.methods end -- datasets
    return nil
end

local OVERVIEW = [[
rtbackup REPL. Every input runs as a task: DICOM and SQL calls block only it.
  help(x)          documentation of a module, function or object (help(dicom), help(ctx.peer))
  Tab              completes globals, module functions, table keys, and aliases inside quotes
  Ctrl-C           drops the line being typed, or interrupts the running input
  Ctrl-D           leaves
Results print readably: C-FIND matches as a table, datasets as a listing, errors as
their message and kind, durations in ms.

Preloaded:]]

--- The help text for a value (nil: the overview of `globals`).
function help.text(v, globals)
    local out = {}
    if v == nil then
        out[1] = OVERVIEW
        local names = {}
        for k in pairs(globals or {}) do names[#names + 1] = k end
        table.sort(names)
        for _, k in ipairs(names) do
            local g = globals[k]
            local summary = ""
            local name = type(g) == "table" and module_name(g)
            local doc = name and module_path(name) and module_doc(module_path(name))
            if doc then summary = (doc[1]:gsub("^[%w_.]+:%s*", ""))
            elseif k == "env" then summary = "the environment (sources, backup_targets, settings; secrets masked)"
            elseif k == "ctx" then summary = "this session's context: ctx:peer(alias) is an audited DICOM peer"
            elseif type(g) == "function" then summary = "function" end
            out[#out + 1] = string.format("  %-8s %s", k, summary)
        end
        return table.concat(out, "\n") .. "\n"
    end
    if type(v) == "function" then
        local signature, doc = help.of_function(v)
        if not signature then return "a function written in C: see README.md and `rtbackup COMMAND --help`\n" end
        out[1] = signature
        for _, line in ipairs(doc) do out[#out + 1] = "  " .. line end
        if #doc == 0 then out[#out + 1] = "  (no doc comment)" end
        return table.concat(out, "\n") .. "\n"
    end
    if type(v) == "table" then
        local name = module_name(v)
        if name then
            local path = module_path(name)
            for _, line in ipairs(path and module_doc(path) or {name}) do out[#out + 1] = line end
            out[#out + 1] = ""
            out[#out + 1] = "functions:"
            function_list(v, name:match("[%w_]+$"), ".", out)
            return table.concat(out, "\n") .. "\n"
        end
    end
    local class = class_of(v)
    if class then
        out[1] = string.format("%s: methods", tostring(v):match("^[^\n]*"))
        function_list(class, "obj", ":", out)
        return table.concat(out, "\n") .. "\n"
    end
    return string.format("%s: no documentation (a %s)\n", tostring(v):match("^[^\n]*"), type(v))
end

return help
