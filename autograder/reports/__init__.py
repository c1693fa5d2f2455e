"""Reports: what a grading run gives back. The student's feedback (feedback), the gradebook (gradebook), the
class report (report), the console summary (terminal), the hand-grading sheet (hand_grading), the flags' kinds
(flags) and the Gradescope autograder (gradescope)."""
