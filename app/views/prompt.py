import streamlit as st

st.title("(pending the circuit API)")
