--- rtbackup.peers: what each peer of an environment must be told about the others,
-- for `rtbackup config peers ENV` (the first day at a site).
--
--   peers.plan(env, {host = "10.10.1.30"}) -- {{alias, type, aet, host, port, entries = {...}}, ...}
--
-- Who talks to whom in a backup:
--   * rtbackup (script_ae) asks every DICOM source for C-FIND and C-MOVE, and the
--     archive (default_backup) for C-FIND, C-MOVE and C-GET (verification, validate,
--     restore); it C-STOREs Mosaiq's records to the staging target and asks the
--     staging target to C-MOVE them on.
--   * A source's C-MOVE goes straight to the archive's AE title: the source must know
--     that AE title with its host and port, and the archive must accept the source's
--     stores. rtbackup's own AE is never a C-MOVE destination of a backup.
--   * The staging target C-MOVEs to the archive the same way.
local peers = {}

local sorted_keys = require("rtbackup.pretty").sorted_keys

local function endpoint(spec)
    return spec.host or spec.ip, spec.port
end

-- One entry a peer needs: another AE with its address and what it may do there.
local function entry(name, aet, host, port, allow, why)
    return {name = name, aet = aet, host = host, port = port, allow = allow, why = why}
end

--- The entries each peer needs, from env. opts.host: the address rtbackup runs on
-- (peers see our calling AE title coming from it); unknown to the environment.
function peers.plan(env, opts)
    opts = opts or {}
    local our_host = opts.host or "RTBACKUP_HOST"
    local script = env.script_ae or {}
    local archive_alias = env.default_backup
    local archive = archive_alias and (env.backup_targets or {})[archive_alias]
    local out = {}
    local function add_peer(alias, spec)
        local host, port = endpoint(spec)
        local p = {alias = alias, type = spec.type, aet = spec.aet, host = host, port = port, entries = {},
                   http_url = spec.http_url}
        out[#out + 1] = p
        return p
    end
    local us = function(allow, why)
        return entry("rtbackup", script.aet, our_host, script.port, allow, why)
    end

    local stagings = {}
    for _, alias in ipairs(sorted_keys(env.sources)) do
        local spec = env.sources[alias]
        if spec.type == "mosaiq" then
            if spec.staging_target_alias then stagings[spec.staging_target_alias] = alias end
        end
    end

    for _, alias in ipairs(sorted_keys(env.sources)) do
        local spec = env.sources[alias]
        if spec.type ~= "mosaiq" then
            local p = add_peer(alias, spec)
            p.entries[#p.entries + 1] = us({echo = true, find = true, move = true},
                "rtbackup queries it (C-FIND) and asks it to send (C-MOVE)")
            if archive then
                local h, port = endpoint(archive)
                p.entries[#p.entries + 1] = entry(archive_alias, archive.aet, h, port, {store = true},
                    "the C-MOVE destination: it sends the backup straight to the archive's AE title")
            end
        end
    end

    for _, alias in ipairs(sorted_keys(env.backup_targets)) do
        local spec = env.backup_targets[alias]
        local p = add_peer(alias, spec)
        if alias == archive_alias then
            p.entries[#p.entries + 1] = us({echo = true, find = true, move = true, get = true, store = true},
                "rtbackup verifies (C-FIND), validates (C-GET) and restores (C-MOVE) from it")
            for _, src in ipairs(sorted_keys(env.sources)) do
                local s = env.sources[src]
                if s.type ~= "mosaiq" then
                    local h, port = endpoint(s)
                    p.entries[#p.entries + 1] = entry(src, s.aet, h, port, {echo = true, store = true},
                        "it sends what rtbackup asks it to move (C-STORE)")
                end
            end
            for staging in pairs(stagings) do
                local s = (env.backup_targets or {})[staging]
                if s then
                    local h, port = endpoint(s)
                    p.entries[#p.entries + 1] = entry(staging, s.aet, h, port, {echo = true, store = true},
                        "it sends the Mosaiq records on (C-STORE)")
                end
            end
        elseif stagings[alias] then
            p.entries[#p.entries + 1] = us({echo = true, find = true, move = true, store = true},
                "rtbackup stores the records built from " .. stagings[alias] .. " and asks it to send them on")
            if archive then
                local h, port = endpoint(archive)
                p.entries[#p.entries + 1] = entry(archive_alias, archive.aet, h, port, {store = true},
                    "the C-MOVE destination of the records")
            end
        else
            p.entries[#p.entries + 1] = us({echo = true, find = true, move = true, get = true, store = true},
                "rtbackup may store to it and query it (restore --to, scripts)")
        end
    end
    return out
end

-- Orthanc's name for a modality: lower case, as its configuration examples write them.
local function modality_name(e)
    return (e.name:lower():gsub("[^%w_-]", "_"))
end

--- The Orthanc "DicomModalities" object entries of one peer (a Lua table ready for JSON).
function peers.orthanc_modalities(p)
    local m = {}
    for _, e in ipairs(p.entries) do
        m[modality_name(e)] = {AET = e.aet, Host = e.host, Port = e.port,
                               AllowEcho = e.allow.echo == true, AllowFind = e.allow.find == true,
                               AllowMove = e.allow.move == true, AllowGet = e.allow.get == true,
                               AllowStore = e.allow.store == true}
    end
    return m
end

local function allowed(e)
    local list = {}
    for _, op in ipairs{"echo", "find", "move", "get", "store"} do
        if e.allow[op] then list[#list + 1] = "C-" .. op:upper() end
    end
    return table.concat(list, ", ")
end

-- JSON with keys in a stable, readable order (cjson's order is the hash's).
local function modalities_json(m, indent)
    local cjson = require "cjson"
    local KEYS = {"AET", "Host", "Port", "AllowEcho", "AllowFind", "AllowMove", "AllowGet", "AllowStore"}
    local lines = {}
    for _, name in ipairs(sorted_keys(m)) do
        local fields = {}
        for _, k in ipairs(KEYS) do fields[#fields + 1] = cjson.encode(k) .. ": " .. cjson.encode(m[name][k]) end
        lines[#lines + 1] = indent .. cjson.encode(name) .. ": { " .. table.concat(fields, ", ") .. " }"
    end
    return table.concat(lines, ",\n")
end

--- The text `config peers` prints: per peer, what to add where.
function peers.text(env, plan)
    local out = {}
    local function say(fmt, ...) out[#out + 1] = string.format(fmt, ...) end
    say("# What each peer of %s must know. Host %s is where rtbackup runs: replace it", env.name,
        plan.our_host or "RTBACKUP_HOST")
    say("# (or give --host) where it appears. Moves go straight from a source to the archive's")
    say("# AE title; rtbackup's own AE title is never a C-MOVE destination of a backup.")
    for _, p in ipairs(plan) do
        say("")
        say("## %s (%s, AE %s at %s port %s)", p.alias, p.type or "?", p.aet, p.host, tostring(p.port))
        if p.type == "orthanc" then
            say("Add to \"DicomModalities\" in its orthanc.json (then restart Orthanc):")
            say("%s", modalities_json(peers.orthanc_modalities(p), "  "))
            if p.http_url then
                say("or, without a restart, through its REST API (http_url; add -u user:password if it asks):")
                local all = peers.orthanc_modalities(p)
                for _, name in ipairs(sorted_keys(all)) do
                    local m = all[name]
                    say("  curl -X PUT %s/modalities/%s -d '%s'", p.http_url:gsub("/+$", ""), name,
                        modalities_json({[name] = m}, ""):match("^[^:]*: (.*)$"))
                end
            end
        else
            say("Add these DICOM nodes (AE title, host, port) in its DICOM daemon's configuration:")
            for _, e in ipairs(p.entries) do
                say("  %-16s %-15s %-5s  %s: %s", e.aet, e.host, tostring(e.port), allowed(e), e.why)
            end
        end
    end
    return table.concat(out, "\n") .. "\n"
end

return peers
