-- Resume a suspended AlignmentRun (spec.suspend = false). activeDeadlineSeconds counts again
-- from the resume.
if obj.spec == nil then
  obj.spec = {}
end
obj.spec.suspend = false
return obj
