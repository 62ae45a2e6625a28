-- requires: testbed
-- The REPL as an operator meets it: on a real pseudo-terminal (tests/spec/pty_drive.py,
-- python3's pty module) for Ctrl-C and Tab, and with piped input for what prints.
-- Peers: the testbed's dcmqrscp "ARIA" and Orthanc "main".
local h = require "helpers"

local tb = h.testbed()
local dir = h.tmpdir()
local config = h.write_file(dir .. "/tb.toml", h.env_toml(tb, "TB", {
    description = "repl spec", default_source = "ARIA", default_backup = "MAIN",
    sources = {{alias = "ARIA", type = "aria", peer = "ARIA"}},
    targets = {{alias = "MAIN", type = "orthanc", peer = "MAIN"}},
    settings = {state_dir = dir .. "/state"}}))

teardown(function() os.execute("rm -rf " .. h.quote(dir)) end)

local function piped(text)
    return h.run({"--config", config, "repl", "TB"}, {stdin = text})
end

-- Types `steps` ({text, wait-for pattern or false, seconds}) at the REPL on a pty.
-- The patterns are Python regular expressions (pty_drive.py waits for them).
local function at_terminal(steps)
    local list = {{"", "TB> ", 10}, {"", false, 0.3}}
    for _, s in ipairs(steps) do
        list[#list + 1] = {s[1], s[2] or nil, s[3] or 10}
        list[#list + 1] = {"", false, 0.3} -- a person pauses; libedit must be reading again
    end
    list[#list + 1] = {"\4", false, 10}
    local json = {}
    for i, s in ipairs(list) do
        json[i] = string.format("[%s, %s, %s]", require("cjson").encode(s[1]),
                                s[2] and require("cjson").encode(s[2]) or "null", s[3])
    end
    local steps_file = h.write_file(dir .. "/steps.json", "[" .. table.concat(json, ",\n") .. "]")
    local p = io.popen(string.format("cd %s && HOME=%s RTBACKUP_HISTORY=%s/history /usr/bin/python3 %s %s -- %s --config %s repl TB 2>&1",
        h.quote(h.source), h.quote(dir), h.quote(dir), h.quote(h.source .. "/tests/spec/pty_drive.py"),
        h.quote(steps_file), h.quote(h.bin), h.quote(config)))
    local out = p:read("a")
    local _, _, code = p:close()
    return out, code
end

describe("the REPL on a terminal", function()
    it("drops the line being typed on Ctrl-C and stays", function()
        local out, code = at_terminal{{"print('never')\3", "\\^C\r\nTB> "}, {"print('after')\r", "after"}}
        assert.are.equal(0, code, out)
        assert.is_nil(out:find("never\r\n", 1, true), out)
        assert.matches("%[drive%] exit 0", out)
        assert.is_nil(out:find("finishing work", 1, true), out)
    end)

    it("interrupts a running loop and a pool call on Ctrl-C, returns to the prompt, and exits 0", function()
        local out = at_terminal{
            {"local n = 0; while true do n = n + 1 end\r", false, 0.5},
            {"\3", "interrupted\r\nTB> "},
            {"task.pool_sleep(1500)\r", false, 0.5},
            {"\3", "interrupted \\(a DICOM or SQL call under way finishes in the background\\)\r\nTB> "},
            {"1 + 1\r", "\r\n2\r\n"},
        }
        assert.matches("%[drive%] exit 0", out)
        assert.is_nil(out:find("SIGINT", 1, true), out)
        assert.is_nil(out:find("nobody waited", 1, true), out)
    end)

    it("completes globals, module functions, table keys and aliases with Tab", function()
        local out = at_terminal{
            {"dico\t", "dico.*m\\."},
            {"pe\t", "pe.*er"},
            {"\3", "TB> "},
            {"env.sour\t", "env\\.sour.*ces\\."},
            {"\3", "TB> "},
            {"ctx:peer(\"AR\t", "AR.*IA"},
            {"\")\r", "ARIA@"},
        }
        assert.matches("%[drive%] exit 0", out)
    end)
end)

describe("the REPL's results", function()
    it("prints C-FIND matches as find's table, with a count", function()
        local r = piped('ctx:peer("ARIA"):find{level = "STUDY", PatientID = "", StudyInstanceUID = ""}\n')
        assert.are.equal(0, r.code, r.output)
        assert.matches("PatientID%s+StudyInstanceUID\n%-+%s+%-+\nRTB00%d", r.stdout)
        assert.matches("%(" .. tb.SYNTH_PATIENTS .. " matches%)", r.stdout)
    end)

    it("prints a C-ECHO as a duration and an error as its message and kind", function()
        local r = piped('ctx:peer("ARIA"):echo()\ndicom.peer{aet = "X", host = "127.0.0.1", port = ' ..
                        tb.CLOSED_PORT .. ', calling_aet = "ME"}:echo()\n')
        assert.matches("^%d+%.%d ms\n", r.stdout)
        assert.matches("%[connect_failed%]", r.stderr)
        assert.is_nil(r.output:find("table: 0x", 1, true), r.output)
    end)

    it("prints a dataset as a listing and a C-MOVE result as counts", function()
        local r = piped(string.format('dicom.read(%q)\n', tb.SYNTH_DIR .. "/" .. (io.popen("ls " .. h.quote(tb.SYNTH_DIR) .. " | grep dcm | head -1"):read("l"))))
        assert.are.equal(0, r.code, r.output)
        assert.matches("%(0010,0020%)", r.stdout)
        assert.matches("PatientID", r.stdout)
        local find = piped('m = ctx:peer("ARIA"):find{level = "IMAGE", StudyInstanceUID = "", SeriesInstanceUID = "", SOPInstanceUID = ""}[1]\n' ..
                           'return ctx:peer("ARIA"):move{level = "IMAGE", StudyInstanceUID = m.StudyInstanceUID, SeriesInstanceUID = m.SeriesInstanceUID, SOPInstanceUID = m.SOPInstanceUID, destination = "' .. tb.MAIN_AET .. '"}\n')
        assert.are.equal(0, find.code, find.output)
        assert.matches("1 instance completed, 0 failed, 0 warning", find.stdout)
    end)

    it("answers help(), help(module) and help(function) from the modules' own doc comments", function()
        local r = piped("help()\nhelp(dicom)\nhelp(dicom.peer)\nhelp(ctx:peer('ARIA'))\n")
        assert.are.equal(0, r.code, r.output)
        assert.matches("Ctrl%-C%s+drops the line being typed", r.stdout)
        assert.matches("dicom%s+DICOM peers, datasets", r.stdout)
        assert.matches("functions:\n", r.stdout)
        -- help(dicom.peer) is the comment above `function dicom.peer` in dicom.lua.
        local f = assert(io.open(h.source .. "/scripts/lib/rtbackup/dicom.lua")):read("a")
        local doc = f:match("\n(%-%-%- A peer: dicom%.peer%(env, alias%)[^\n]*)\n")
        assert.is_truthy(doc)
        assert.matches("dicom%.peer%(spec, alias%)\n  A peer: dicom%.peer%(env, alias%)", r.stdout)
        assert.matches("obj:find%(query, on_match%)%s+C%-FIND%.", r.stdout)
    end)
end)
