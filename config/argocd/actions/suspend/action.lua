-- Suspend an AlignmentRun: running stage Jobs are deleted and no new ones are created; the run
-- later resumes at the same phase and stage. spec.suspend is a mutable lifecycle field.
if obj.spec == nil then
  obj.spec = {}
end
obj.spec.suspend = true
return obj
