"""Intake: from an upload to code the grader can run, read without running it. The archive or notebook
(unpack), whose student it is (student_ids), the definitions the worker loads (notebook_code), and the rules it
breaks: edited locked cells (audit, handout_match), forbidden APIs (forbidden, name_flow), a fast-mode run
(fast_run)."""
