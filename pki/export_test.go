package pki

// AuditQueueLen reports how many audit records wait for the writer.
func AuditQueueLen(ca *CA) int { return len(ca.audit.q) }

// AuditLingerExpired reports how many audit batches were written because
// Config.AuditLinger ran out (rather than because nothing more was coming).
func AuditLingerExpired(ca *CA) int64 { return ca.audit.lingerExpired.Load() }
