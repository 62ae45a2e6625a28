--- rtbackup.parallel_store: C-STORE of many files over several associations at once.
--
-- A peer that ingests in parallel (Orthanc) stores more per second over several
-- associations than over one. The files are cut into batches of consecutive files
-- (a series stays together, so each association negotiates few contexts); each batch
-- is one peer:store() (one association, reopened by it when lost), and as many
-- batches run at once as rtbackup.pace allows: adaptive below the peer's
-- max_associations by default (one more while throughput grows, half on trouble or
-- when the peer queues associations instead of serving them, logged), or a fixed
-- number. A peer that serves one association at a time (a storescp) ends with one.
--
--   local r = parallel_store.store(peer, files, {associations = 4})  -- nil: adaptive
--   r.stored, r.failed, r.refused, r.unreadable, r.not_sent, r.items, r.error, ...
--   r.pace                             -- {cap, final, peak, adaptive, changes}
--
-- The result has peer:store()'s shape, items in the order of `files`, so a caller
-- reports each file's outcome exactly as after one association.
--
-- What one association's trouble does to the others:
--   * a batch whose association kept failing (its breaker tripped: the peer failed
--     max_reconnects + 1 associations in a row) or that could not get one at all
--     while nothing else was running gives up for the whole store: batches not begun
--     are reported not sent with the same reason, without trying (a dead peer is not
--     asked once per batch);
--   * a batch refused an association while other batches were running, or after the
--     peer had already taken some of this store (a peer at its own limit of
--     associations), goes back in the queue after a short wait, and the pace takes it
--     as trouble (half as many at once). It is tried again as long as other batches
--     get files stored meanwhile, else at most 3 times.
local errors = require "rtbackup.error"
local host = require "rtbackup.host"
local pace = require "rtbackup.pace"
local task = require "rtbackup.task"

local M = {}

-- Files per batch: about 4 batches for every place in use when the batch is cut (so
-- the pace has windows to judge and the last batches end close together), but at
-- least MIN_BATCH files (an association costs a negotiation) and at most MAX_BATCH (so
-- the pace sees its samples often on large trees). A batch is cut when a place takes
-- it, for the places of that moment: a peer the pace brought down to one association
-- gets few large batches, not the many small ones cut for the places it began with.
local MIN_BATCH, MAX_BATCH, BATCHES_PER_PLACE = 8, 200, 4
local MAX_REQUEUES, REQUEUE_WAIT_MS = 3, 200

--- The batch size for n files and `width` associations at once.
function M.batch_size(n, width, fixed)
    local size = math.ceil(n / (width * BATCHES_PER_PLACE))
    size = math.max(MIN_BATCH, math.min(MAX_BATCH, size))
    -- A fixed number of associations gets at least that many batches when it can.
    if fixed then size = math.min(size, math.max(1, math.ceil(n / width))) end
    return size
end

local function copy_error(e, prefix)
    if type(e) ~= "table" then
        return errors.new{kind = "aborted", message = prefix .. tostring(e)}
    end
    local c = {}
    for k, v in pairs(e) do c[k] = v end
    if prefix ~= "" then c.message = prefix .. tostring(e.message) end
    return errors.new(c)
end

--- Stores `files` (paths, or datasets) on `peer`. opts: associations (a fixed
-- number; nil or 0: adaptive up to cap), cap (default peer.max_associations, else
-- 8), adaptive (default true; false: fixed at cap), max_reconnects, backoff_ms,
-- max_backoff_ms, patient (as for peer:store), progress (true: a "done/total files"
-- line rewritten on stderr).
function M.store(peer, files, opts)
    opts = opts or {}
    local n = #files
    local cap = math.max(1, math.tointeger(opts.cap or peer.max_associations) or 8)
    local fixed = math.tointeger(opts.associations)
    if fixed and fixed < 1 then fixed = nil end
    local p
    if fixed then
        p = pace.new{cap = fixed, adaptive = false, name = peer.alias or peer.aet}
    else
        p = pace.new{cap = cap, adaptive = opts.adaptive ~= false, name = peer.alias or peer.aet}
    end
    local store_opts = {max_reconnects = opts.max_reconnects, backoff_ms = opts.backoff_ms,
                        max_backoff_ms = opts.max_backoff_ms, patient = opts.patient}

    -- One association for everything: exactly peer:store().
    if p.cap == 1 or n <= MIN_BATCH then
        store_opts.progress = opts.progress
        local r = peer:store(files, store_opts)
        r.pace = {cap = p.cap, final = 1, peak = 1, adaptive = p.adaptive, changes = 0}
        return r
    end

    -- Batches put back to be tried again; files from next_file on are not cut yet.
    local queue, next_file, cut = {}, 1, 0
    local function more() return next_file <= n or #queue > 0 end
    -- The next batch: files not cut yet first (in order), then those put back.
    local function take()
        if next_file > n then return table.remove(queue, 1) end
        local idx = {}
        local last = math.min(n, next_file + M.batch_size(n, p:usable(), fixed ~= nil) - 1)
        for i = next_file, last do idx[#idx + 1] = i end
        next_file, cut = last + 1, cut + 1
        return {idx = idx, order = cut, requeues = 0, mark = -1}
    end

    local items = {}
    local totals = {associations = 0, reconnects = 0, breaker_open = false, stored = 0}
    local first_error, first_error_order -- the error of the earliest batch that had one
    local gave_up                        -- the error every batch not begun is reported with
    local done = 0

    local function progress()
        if opts.progress then
            io.stderr:write(string.format("\r%d/%d files", done, n))
            io.stderr:flush()
        end
    end

    local function note_error(e, order)
        if e ~= nil and (first_error_order == nil or order < first_error_order) then
            first_error, first_error_order = e, order
        end
    end

    -- Items of a batch that never got an association because the store gave up.
    local function not_sent(batch)
        for _, i in ipairs(batch.idx) do
            items[i] = {ok = false, outcome = "not_sent", status = 0,
                        path = type(files[i]) == "string" and files[i] or nil,
                        error = copy_error(gave_up, "")}
        end
        done = done + #batch.idx
        progress()
    end

    local function run_batch(batch, ticket)
        local list = {}
        for k, i in ipairs(batch.idx) do list[k] = files[i] end
        local t0 = host.monotonic()
        local ok, r = pcall(peer.store, peer, list, store_opts)
        local seconds = host.monotonic() - t0
        local others = p.active > 1
        if not ok then
            -- The operation itself failed (the peer skipped, a bug): nothing was sent.
            gave_up = gave_up or copy_error(r, "not sent: ")
            note_error(r, batch.order)
            p:leave({instances = 0, seconds = seconds, trouble = true}, ticket)
            not_sent(batch)
            return
        end
        totals.associations = totals.associations + (r.associations or 0)
        totals.reconnects = totals.reconnects + (r.reconnects or 0)
        if r.breaker_open then totals.breaker_open = true end
        totals.stored = totals.stored + (r.stored or 0)
        local requeue
        -- Tried again while the peer takes the other batches: as long as something was
        -- stored since this batch was last queued, else at most MAX_REQUEUES times.
        local progress_since = totals.stored > batch.mark
        if r.error and not r.breaker_open and (others or totals.stored > 0) and not gave_up
           and (progress_since or batch.requeues < MAX_REQUEUES) then
            local tries = progress_since and 0 or batch.requeues + 1
            requeue = {idx = {}, order = batch.order, requeues = tries, mark = totals.stored,
                       wait_ms = REQUEUE_WAIT_MS << math.min(tries, 4)}
        end
        for k, item in ipairs(r.items) do
            local i = batch.idx[k]
            if requeue and item.outcome == "not_sent" then
                requeue.idx[#requeue.idx + 1] = i
            else
                items[i] = item
                done = done + 1
            end
        end
        if requeue and #requeue.idx > 0 then
            queue[#queue + 1] = requeue
        elseif r.error then
            note_error(r.error, batch.order)
            if not gave_up then
                -- The reason the last item of this batch was not sent, else the association's.
                local reason
                for k = #r.items, 1, -1 do
                    if r.items[k].outcome == "not_sent" then reason = r.items[k].error break end
                end
                gave_up = reason or copy_error(r.error, "not sent: ")
            end
        end
        p:leave({instances = r.stored or 0, seconds = seconds, opening = r.open_seconds,
                 associations = r.associations, trouble = r.error ~= nil or (r.reconnects or 0) > 0}, ticket)
        progress()
    end

    -- A worker takes the next batch once it has a place, so the batches go in order
    -- and none waits in a worker's hands while others are sent.
    local function worker()
        while more() do
            local ticket = not gave_up and p:enter()
            local batch = take()
            if batch and batch.wait_ms and ticket and not gave_up then task.sleep(batch.wait_ms) end
            if ticket and (gave_up or not batch) then p:give_back() end
            if not batch then break end
            if gave_up then not_sent(batch) else run_batch(batch, ticket) end
        end
    end

    -- Batches put back after every worker ended get workers again.
    while more() do
        local workers = {}
        for w = 1, p.cap do workers[w] = task.spawn(worker) end
        for _, w in ipairs(workers) do task.wait(w) end
    end

    local r = {stored = 0, refused = 0, unreadable = 0, not_sent = 0, items = items,
               associations = totals.associations, reconnects = totals.reconnects,
               breaker_open = totals.breaker_open, error = first_error, pace = p:report()}
    for i = 1, n do
        local outcome = items[i].outcome
        if outcome == "stored" then r.stored = r.stored + 1
        elseif r[outcome] then r[outcome] = r[outcome] + 1 end
    end
    r.failed = n - r.stored
    return r
end

return M
