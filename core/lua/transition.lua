-- transition: a task's transition alone, for outcomes recorded by another script (a dead
-- letter's, whose ARGV ends with the entry's fields).
-- KEYS[1..] keys of the transition's ops (named by index in ARGV)
-- ARGV[1..] the transition's ops (see lib/apply.lua)
-- Returns true.
--@include apply
apply(1, #ARGV)
return true
