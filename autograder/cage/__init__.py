"""The cage, from the judge's side: how a sandboxed worker is started (sandbox), forked from a server that
imported torch once (forkserver), spoken to with deadlines (client), answered when the layers' attention
stand-in asks (attention_oracle), and the grader's own temporary folders (scratch). What runs inside the cage is
autograder/sandboxed/."""
