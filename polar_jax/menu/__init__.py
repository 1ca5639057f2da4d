"""The program menu: a dense outcome matrix of K ranked programs x every question, and the offline lab.

Modules: `matrix` (MenuMatrix, its files, the guard that keeps test outcomes away from fitting code), `lab`
(selectors, exact offline scoring with intervals, the coverage curve), `build` (ranking the searched
programs and running them in resumable chunks; imports the model stack only when it runs).
"""
