-- Argo CD resource actions for AlignmentRun: suspend and resume (spec.suspend).
-- Installed with the argocd-cm key resource.customizations.actions.alignment.bpo.dev_AlignmentRun.
-- suspend is offered while the run is neither suspended nor finished; resume while it is suspended.
local actions = {}

local function isTrue(ctype)
  if obj.status == nil or obj.status.conditions == nil then
    return false
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == ctype then
      return c.status == "True"
    end
  end
  return false
end

local suspended = obj.spec ~= nil and obj.spec.suspend == true
local finished = isTrue("Succeeded") or isTrue("Failed")

actions["suspend"] = {["disabled"] = suspended or finished, ["iconClass"] = "fa fa-fw fa-pause"}
actions["resume"] = {["disabled"] = not suspended, ["iconClass"] = "fa fa-fw fa-play"}
return actions
