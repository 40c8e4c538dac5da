-- Argo CD health check for yolo-sparsify.io/SparsifyJob.
-- Install: add it to argocd-cm under
--   resource.customizations.health.yolo-sparsify.io_SparsifyJob
-- (see argocd-cm-patch.yaml next to this file).
hs = {}
if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end
local generation = obj.metadata.generation
local ready = nil
local stalled = nil
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then ready = c end
  if c.type == "Stalled" then stalled = c end
end
if ready ~= nil and ready.observedGeneration ~= nil and generation ~= nil and ready.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = (stalled.reason or "Failed") .. ": " .. (stalled.message or "")
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Succeeded"
  return hs
end
hs.status = "Progressing"
hs.message = (obj.status.phase or "Pending") .. ((ready ~= nil and ready.message ~= nil) and (": " .. ready.message) or "")
return hs
