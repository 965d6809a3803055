"""Pretrained learned-scheduler policies shipped with rlopt, one ``<name>.rlopt`` file each.

Load one with ``LearnedScheduler.pretrained(name, optimizer, total_steps=T)``; list them with
:func:`rlopt.scheduler.pretrained_names`. ``README.md`` in this folder records, for each file, the
command that made it, its training CPU time and the commit it was trained at.
"""
