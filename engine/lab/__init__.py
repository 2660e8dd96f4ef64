"""The hands-on lab the engine grew from: checks (its milestones, read from real state) and
the steps of one container as the lab tells them. Imports terminal and below.
"""
