-- Argo CD health check for alignment.bpo.dev/v1alpha1 AlignmentRun.
-- Install: the argocd-cm key resource.customizations.health.alignment.bpo.dev_AlignmentRun
-- (see argocd-cm-patch.yaml and docs/gitops.md). Argo CD sets the global `obj` and reads the
-- returned table {status, message}. test/chart/argocd_test.go runs this file.
--
--   Progressing  no status yet, or status.observedGeneration < metadata.generation (the
--                controller has not seen the latest spec), or Running / Pending
--   Healthy      Succeeded=True
--   Degraded     Failed=True (terminal)
--   Suspended    Suspended=True (spec.suspend is true)
local hs = {}

local function condition(status, ctype)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function isTrue(c)
  return c ~= nil and c.status == "True"
end

local function describe(c, fallback)
  if c == nil then
    return fallback
  end
  local msg = c.reason or fallback
  if c.message ~= nil and c.message ~= "" then
    msg = msg .. ": " .. c.message
  end
  return msg
end

local function progress(status)
  local parts = {}
  if status.progress ~= nil and status.progress ~= "" then
    table.insert(parts, "phase " .. status.progress)
  end
  if status.stage ~= nil and status.stage ~= "" then
    table.insert(parts, "stage " .. status.stage)
  end
  if status.latestWinRate ~= nil and status.latestWinRate ~= "" then
    table.insert(parts, "win rate " .. status.latestWinRate)
  end
  return table.concat(parts, ", ")
end

local status = obj.status
local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end

if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to reconcile the run"
  return hs
end

if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to observe generation " .. string.format("%d", generation)
  if status.observedGeneration ~= nil then
    hs.message = hs.message .. " (status is of generation " .. string.format("%d", status.observedGeneration) .. ")"
  end
  return hs
end

local failed = condition(status, "Failed")
local succeeded = condition(status, "Succeeded")
local suspended = condition(status, "Suspended")
local running = condition(status, "Running")

if isTrue(failed) then
  hs.status = "Degraded"
  hs.message = describe(failed, "Failed")
elseif isTrue(succeeded) then
  hs.status = "Healthy"
  hs.message = describe(succeeded, "Succeeded")
  local p = progress(status)
  if p ~= "" then
    hs.message = hs.message .. " (" .. p .. ")"
  end
elseif isTrue(suspended) then
  hs.status = "Suspended"
  hs.message = describe(suspended, "Suspended")
else
  hs.status = "Progressing"
  if isTrue(running) then
    hs.message = describe(running, "Running")
  else
    hs.message = describe(running, "Waiting for the run to start")
  end
  local p = progress(status)
  if p ~= "" then
    hs.message = hs.message .. " (" .. p .. ")"
  end
end
return hs
