-- Linking at scale: in a catalog of millions of rows the link rules' statements are estimated
-- costly enough for PostgreSQL's JIT, and compiling them took longer than running them, for
-- every batch of relink_all_files() and every registration statement's trigger. Our own
-- sessions turn JIT off; this function also runs from an operator's session
-- (CALL relink_all_files(), a procedure, which may not carry a SET clause since it commits).
ALTER FUNCTION apply_link_rules(bigint[], boolean) SET jit = off;
