-- Argo CD health of r1-operator.dev/DeepSeekDeployment (docs/gitops.md).
-- Argo CD runs this with gopher-lua (Lua 5.1) and the resource in the global `obj`; it returns
-- {status = Healthy | Progressing | Degraded, message = ...}. The rules read the status that
-- operator/r1_operator/status.py writes; tests/deploy/test_argocd_health.py runs them on it.
--   Progressing  no status yet, or the operator has not observed the latest generation
--   Degraded     phase Failed or Degraded, or Ready=False because the spec is InvalidSpec or
--                Unschedulable: a change of spec is needed, waiting will not help
--   Healthy      Ready=True, observed at the current generation
--   Progressing  otherwise: Pending, Provisioning, Building, or a rollout still running
local hs = {}

local function condition(conditions, kind)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function text(value, default)
  if value == nil or value == "" then
    return default
  end
  return tostring(value)
end

local status = obj.status
if status == nil or (status.phase == nil and status.conditions == nil) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report a status"
  return hs
end

local generation = tonumber(obj.metadata.generation) or 0
local observed = tonumber(status.observedGeneration)
local ready = condition(status.conditions, "Ready")
if observed == nil or observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
    .. " (status is of generation " .. text(observed, "none") .. ")"
  return hs
end
if ready ~= nil and tonumber(ready.observedGeneration) ~= nil
    and tonumber(ready.observedGeneration) < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition of generation " .. generation
  return hs
end

local phase = text(status.phase, "Unknown")
local reason = ready ~= nil and text(ready.reason, "") or ""
local detail = ready ~= nil and text(ready.message, "") or ""
local function describe()
  local head = "Phase " .. phase
  if reason ~= "" then
    head = head .. " (" .. reason .. ")"
  end
  if detail ~= "" then
    return head .. ": " .. detail
  end
  return head
end

if phase == "Failed" or phase == "Degraded" then
  hs.status = "Degraded"
  hs.message = describe()
  return hs
end
if ready ~= nil and ready.status == "False"
    and (reason == "InvalidSpec" or reason == "Unschedulable") then
  hs.status = "Degraded"
  hs.message = describe()
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe()
  return hs
end

hs.status = "Progressing"
if ready == nil then
  hs.message = describe() .. ": no Ready condition yet"
else
  hs.message = describe()
end
return hs
